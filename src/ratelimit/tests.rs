//! Unit tests of the rate limits: the YAML section, precedence, messages,
//! and memory. Time is a manual [`RateClock`]: no test sleeps or depends
//! on how fast it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use serde::Deserialize;

use super::*;
use crate::config::error::{parse_yaml, ConfigError};
use crate::config::{load, Env, MemSource};
use crate::policy::Policy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    rate_limits: Option<RawRateLimits>,
}

fn parse(yaml: &str, policy: Option<&Policy>) -> Result<RateSettings, Vec<ConfigError>> {
    let doc: Doc = parse_yaml("gateway.yaml", yaml).map_err(|e| vec![e])?;
    validate(doc.rate_limits, "gateway.yaml", policy)
}

fn settings(yaml: &str) -> RateSettings {
    parse(yaml, None).unwrap_or_else(|e| panic!("rejected: {e:?}"))
}

/// The errors as `line: message`, to compare in one assertion.
fn errors(yaml: &str, policy: Option<&Policy>) -> Vec<String> {
    match parse(yaml, policy) {
        Ok(s) => panic!("accepted: {s:?}"),
        Err(e) => e
            .iter()
            .map(|e| {
                assert_eq!(e.file, "gateway.yaml");
                format!("{}: {}", e.line.expect("a line"), e.message)
            })
            .collect(),
    }
}

fn rate(amount: u32, per: Per, burst: u32) -> Rate {
    Rate::new(amount, per, burst).expect("non-zero")
}

/// The example users and CI identities, with the shipped roles.
fn example_policy() -> Policy {
    let mut files = BTreeMap::new();
    files.insert(
        "gateway.yaml".to_string(),
        "racks:\n  staging:\n    url: https://staging.example.com\n    password_env: PW\n  production:\n    url: https://production.example.com\n    password_env: PW\n".to_string(),
    );
    for (k, v) in [
        ("roles/admin.yaml", include_str!("../../roles/admin.yaml")),
        (
            "roles/deployer.yaml",
            include_str!("../../roles/deployer.yaml"),
        ),
        ("roles/ops.yaml", include_str!("../../roles/ops.yaml")),
        ("roles/viewer.yaml", include_str!("../../roles/viewer.yaml")),
        ("users.yaml", include_str!("../../users.yaml.example")),
        ("ci.yaml", include_str!("../../ci.yaml.example")),
    ] {
        files.insert(k.to_string(), v.to_string());
    }
    let src = MemSource {
        files,
        label: "t".into(),
        base: PathBuf::from("."),
    };
    load(&src, &Env::from_pairs([("PW", "x")]))
        .unwrap_or_else(|e| panic!("example config does not load:\n{e}"))
        .policy
}

fn person<'a>(email: &'a str, roles: &'a [&'a str]) -> Who<'a> {
    Who {
        name: email,
        ci: false,
        roles,
    }
}

fn ci<'a>(name: &'a str, roles: &'a [&'a str]) -> Who<'a> {
    Who {
        name,
        ci: true,
        roles,
    }
}

/// How many `operation`s in a row pass (nothing refills: the clock stands
/// still).
fn passes(l: &Limiters, who: &Who<'_>, operation: &str) -> usize {
    (0..10_000)
        .take_while(|_| l.check(who, operation).is_ok())
        .count()
}

fn manual(s: RateSettings) -> (Limiters, RateClock) {
    let clock = RateClock::manual();
    (Limiters::with_clock(s, clock.clone()), clock)
}

// --- the YAML section ------------------------------------------------------

#[test]
fn absent_or_empty_section_gives_the_defaults() {
    let d = RateSettings::default();
    assert_eq!(settings("{}"), d);
    assert_eq!(settings("rate_limits:\n"), d);
    assert_eq!(settings("rate_limits: {}\n"), d);
    assert_eq!(d.default, rate(20, Per::Second, 40));
    assert_eq!(d.ci, rate(50, Per::Second, 100));
    assert_eq!(d.expensive, rate(2, Per::Second, 5));
    assert_eq!(d.auth_failures, rate(10, Per::Minute, 10));
    let ops: Vec<&str> = d.expensive_operations.iter().map(String::as_str).collect();
    assert_eq!(ops, DEFAULT_EXPENSIVE_OPERATIONS);
    // Every default expensive operation is a real operation.
    for op in DEFAULT_EXPENSIVE_OPERATIONS {
        assert!(crate::policy::op_index(op).is_some(), "{op}");
    }
}

#[test]
fn full_section_parses_short_and_map_rates() {
    let s = settings(
        "rate_limits:
  default: 30/s
  ci: {rate: 5/min, burst: 2}
  roles: { deployer: 10/s, admin: {rate: 30/s, burst: 60} }
  identities: { \"Alice@Example.com\": 5/s, \"ci:deploy-bot\": 100/h }
  expensive: 1/s
  expensive_operations: [run, \"apps *\"]
  auth_failures: 3/min
",
    );
    assert_eq!(s.default, rate(30, Per::Second, 30));
    assert_eq!(s.ci, rate(5, Per::Minute, 2));
    assert_eq!(s.roles["deployer"], rate(10, Per::Second, 10));
    assert_eq!(s.roles["admin"], rate(30, Per::Second, 60));
    assert_eq!(s.persons["alice@example.com"], rate(5, Per::Second, 5));
    assert_eq!(s.ci_identities["deploy-bot"], rate(100, Per::Hour, 100));
    assert_eq!(s.expensive, rate(1, Per::Second, 1));
    assert_eq!(s.auth_failures, rate(3, Per::Minute, 3));
    assert!(s.expensive_operations.contains("run"));
    assert!(s.expensive_operations.contains("apps create"));
    assert!(s.expensive_operations.contains("apps delete"));
    assert!(!s.expensive_operations.contains("exec"));
    // An empty list turns the expensive bucket off.
    assert!(settings("rate_limits:\n  expensive_operations: []\n")
        .expensive_operations
        .is_empty());
}

#[test]
fn rate_display_round_trips_through_the_parser() {
    assert_eq!(rate(20, Per::Second, 20).to_string(), "20/s");
    assert_eq!(
        rate(20, Per::Second, 40).to_string(),
        "{rate: 20/s, burst: 40}"
    );
    for r in [
        rate(1, Per::Hour, 1),
        rate(7, Per::Minute, 3),
        rate(20, Per::Second, 40),
    ] {
        let s = settings(&format!("rate_limits:\n  default: {r}\n"));
        assert_eq!(s.default, r);
    }
}

#[test]
fn invalid_rates_are_reported_at_their_line() {
    let got = errors(
        "rate_limits:
  default: 0/s
  expensive: 20/m
  auth_failures: 20/day
  roles:
    deployer: x/s
    admin: {rate: 10/s, burst: 0}
    ops: 2000000/s
  identities:
    \"ci:\": 1/s
    bob: 1/s
    \"a@example.com\": 1/s
    \"A@example.com\": 2/s
  expensive_operations: [deploy, run]
",
        None,
    );
    assert_eq!(
        got,
        [
            "2: rate_limits.default: rate `0/s` must be at least 1",
            "3: rate_limits.expensive: rate `20/m`: write minutes as `min` (e.g. 20/s, 10/min or 100/h)",
            "4: rate_limits.auth_failures: rate `20/day`: the unit must be s, min or h (e.g. 20/s, 10/min or 100/h)",
            "6: rate_limits.roles.deployer: rate `x/s`: `x` is not a whole number (e.g. 20/s, 10/min or 100/h)",
            "7: rate_limits.roles.admin: burst `0` must be at least 1",
            "8: rate_limits.roles.ops: rate `2000000/s` must be at most 1000000",
            "10: rate_limits.identities: `ci:` needs a CI identity name",
            "11: rate_limits.identities: `bob` must be a person's email or `ci:<name>` for a CI identity",
            "13: rate_limits.identities: `A@example.com` is listed twice (emails are case-insensitive)",
            "14: rate_limits.expensive_operations: `deploy` matches no operation (see `rack-gateway routes`)",
        ],
    );
}

#[test]
fn structural_errors_come_from_the_parser_with_a_line() {
    for (yaml, line, needle) in [
        (
            "rate_limits:\n  ci: 20\n",
            2,
            "rate `20` needs a unit (e.g. 20/s",
        ),
        ("rate_limits:\n  defualt: 20/s\n", 2, "defualt"),
        (
            "rate_limits:\n  default: {rate: 20/s, bursts: 3}\n",
            2,
            "bursts",
        ),
        ("rate_limits:\n  default: {burst: 3}\n", 2, "rate"),
        (
            "rate_limits:\n  default: 1/s\n  default: 2/s\n",
            3,
            "duplicate",
        ),
    ] {
        let e = parse(yaml, None).expect_err(yaml);
        assert_eq!(e.len(), 1, "{yaml}: {e:?}");
        assert_eq!(e[0].line, Some(line), "{yaml}: {e:?}");
        assert!(
            e[0].message.to_lowercase().contains(needle),
            "{yaml}: {}",
            e[0].message
        );
    }
}

#[test]
fn names_are_checked_against_the_policy() {
    let p = example_policy();
    let got = errors(
        "rate_limits:
  roles: { deployer: 1/s, deplyer: 1/s }
  identities:
    \"alice@example.com\": 1/s
    \"someone@contractors.example.com\": 1/s
    \"mallory@elsewhere.example\": 1/s
    \"ci:deploy-bot\": 1/s
    \"ci:github-deploy\": 1/s
    \"ci:nobody\": 1/s
",
        Some(&p),
    );
    assert_eq!(
        got,
        [
            "2: rate_limits.roles: there is no role `deplyer` (roles/*.yaml)",
            "6: rate_limits.identities: `mallory@elsewhere.example` is neither in users.yaml nor in a domain listed there",
            "9: rate_limits.identities: there is no CI identity `nobody` in ci.yaml",
        ]
    );
}

// --- precedence -----------------------------------------------------------

/// Rates that differ only in burst, so the number of requests that pass
/// shows which one applied.
fn marked() -> RateSettings {
    let mut s = RateSettings {
        default: rate(1, Per::Hour, 1),
        ci: rate(1, Per::Hour, 2),
        expensive_operations: BTreeSet::new(),
        ..RateSettings::default()
    };
    s.roles.insert("viewer".into(), rate(1, Per::Hour, 3));
    s.roles.insert("deployer".into(), rate(1, Per::Hour, 4));
    s.roles.insert("ops".into(), rate(1, Per::Minute, 1)); // 60/h: most generous
    s.persons
        .insert("alice@example.com".into(), rate(1, Per::Hour, 5));
    s.ci_identities
        .insert("deploy-bot".into(), rate(1, Per::Hour, 6));
    s
}

#[test]
fn precedence_identity_then_roles_then_ci_then_default() {
    let (l, _) = manual(marked());
    // Identity entry wins over every role.
    assert_eq!(
        passes(&l, &person("alice@example.com", &["deployer"]), "apps"),
        5
    );
    assert_eq!(passes(&l, &ci("deploy-bot", &["deployer"]), "apps"), 6);
    // Role entries win over `ci` and `default`.
    assert_eq!(
        passes(&l, &person("bob@example.com", &["viewer"]), "apps"),
        3
    );
    assert_eq!(passes(&l, &ci("other-bot", &["viewer"]), "apps"), 3);
    // Roles without an entry do not count.
    assert_eq!(
        passes(&l, &person("carol@example.com", &["admin"]), "apps"),
        1
    );
    assert_eq!(passes(&l, &ci("third-bot", &["admin"]), "apps"), 2);
    assert_eq!(passes(&l, &ci("fourth-bot", &[]), "apps"), 2);
    assert_eq!(passes(&l, &person("dave@example.com", &[]), "apps"), 1);
    // A person entry is not a CI entry of the same name, and vice versa.
    assert_eq!(passes(&l, &ci("alice@example.com", &[]), "apps"), 2);
    assert_eq!(passes(&l, &person("deploy-bot", &[]), "apps"), 1);
}

#[test]
fn the_most_generous_role_applies() {
    let (l, _) = manual(marked());
    // Same rate: the larger burst.
    assert_eq!(
        passes(&l, &person("a@x.example", &["viewer", "deployer"]), "apps"),
        4
    );
    assert_eq!(
        passes(&l, &person("b@x.example", &["deployer", "viewer"]), "apps"),
        4
    );
    // Higher sustained rate beats a larger burst.
    let msg = {
        let who = person("c@x.example", &["deployer", "ops", "viewer"]);
        assert_eq!(passes(&l, &who, "apps"), 1);
        l.check(&who, "apps").unwrap_err().message
    };
    assert_eq!(msg, "rate limit: 1 request/min for role ops; retry in 60s");
    assert!(rate(1, Per::Minute, 1).more_generous_than(&rate(59, Per::Hour, 59)));
    assert!(!rate(60, Per::Hour, 1).more_generous_than(&rate(1, Per::Minute, 1)));
    assert!(rate(60, Per::Hour, 2).more_generous_than(&rate(1, Per::Minute, 1)));
}

#[test]
fn emails_are_case_insensitive_and_share_one_bucket() {
    let (l, _) = manual(marked());
    assert_eq!(passes(&l, &person("Alice@Example.COM", &[]), "apps"), 5);
    assert!(l.check(&person("alice@example.com", &[]), "apps").is_err());
}

#[test]
fn role_names_come_from_every_grant_without_duplicates() {
    let p = example_policy();
    let alice = p.person("alice@example.com").expect("alice");
    assert_eq!(role_names(&p, alice), ["deployer", "viewer"]);
    let contractor = p.person("x@contractors.example.com").expect("domain");
    assert_eq!(role_names(&p, contractor), ["viewer"]);
}

// --- refusals ---------------------------------------------------------------

#[test]
fn messages_name_the_rule_and_the_wait() {
    let mut s = RateSettings {
        default: rate(10, Per::Second, 10),
        ci: rate(3, Per::Minute, 1),
        expensive: rate(1, Per::Hour, 1),
        ..RateSettings::default()
    };
    s.roles.insert("deployer".into(), rate(10, Per::Second, 10));
    s.persons
        .insert("alice@example.com".into(), rate(1, Per::Minute, 1));
    s.ci_identities
        .insert("deploy-bot".into(), rate(2, Per::Minute, 2));
    let (l, _) = manual(s);
    let refusal = |who: Who<'_>, op: &str| {
        let n = passes(&l, &who, op);
        let e = l.check(&who, op).expect_err("refused");
        (n, e.message, e.retry_after, e.bucket)
    };
    let secs = Duration::from_secs;
    assert_eq!(
        refusal(person("bob@example.com", &["deployer"]), "apps"),
        (
            10,
            "rate limit: 10 requests/s for role deployer; retry in 1s".to_string(),
            secs(1),
            Bucket::Identity
        )
    );
    assert_eq!(
        refusal(person("ALICE@example.com", &["deployer"]), "apps"),
        (
            1,
            "rate limit: 1 request/min for identity alice@example.com; retry in 60s".to_string(),
            secs(60),
            Bucket::Identity
        )
    );
    assert_eq!(
        refusal(ci("deploy-bot", &[]), "apps"),
        (
            2,
            "rate limit: 2 requests/min for identity ci:deploy-bot; retry in 30s".to_string(),
            secs(30),
            Bucket::Identity
        )
    );
    assert_eq!(
        refusal(ci("other-bot", &[]), "apps"),
        (
            1,
            "rate limit: 3 requests/min for CI identities; retry in 20s".to_string(),
            secs(20),
            Bucket::Identity
        )
    );
    assert_eq!(
        refusal(person("carol@example.com", &[]), "apps"),
        (
            10,
            "rate limit: 10 requests/s per identity; retry in 1s".to_string(),
            secs(1),
            Bucket::Identity
        )
    );
    assert_eq!(
        refusal(person("dave@example.com", &[]), "run"),
        (
            1,
            "rate limit: 1 request/h for expensive operations (run); retry in 3600s".to_string(),
            secs(3600),
            Bucket::Expensive
        )
    );
}

#[test]
fn retry_after_is_rounded_up_to_whole_seconds_and_at_least_one() {
    let s = RateSettings {
        default: rate(1, Per::Minute, 1),
        ..RateSettings::default()
    };
    let (l, clock) = manual(s);
    let who = person("a@example.com", &[]);
    l.check(&who, "apps").expect("first passes");
    for (advance_ms, want) in [(0, 60), (500, 60), (500, 59), (58_999, 1)] {
        clock.advance(Duration::from_millis(advance_ms));
        let e = l.check(&who, "apps").expect_err("refused");
        assert_eq!(
            e.retry_after,
            Duration::from_secs(want),
            "after +{advance_ms}ms"
        );
        assert!(
            e.message.ends_with(&format!("; retry in {want}s")),
            "{}",
            e.message
        );
    }
    // Exactly at the full minute the token is back.
    clock.advance(Duration::from_millis(1));
    l.check(&who, "apps").expect("refilled");

    // A wait far below a second still says 1s.
    let s = RateSettings {
        default: rate(1000, Per::Second, 1),
        ..RateSettings::default()
    };
    let (l, _) = manual(s);
    l.check(&who, "apps").expect("first passes");
    let e = l.check(&who, "apps").expect_err("refused");
    assert_eq!(e.retry_after, Duration::from_secs(1));
    assert_eq!(
        e.message,
        "rate limit: 1000 requests/s per identity; retry in 1s"
    );
}

#[test]
fn expensive_bucket_is_separate_and_on_top_of_the_normal_one() {
    let s = RateSettings {
        default: rate(1, Per::Hour, 10),
        expensive: rate(1, Per::Hour, 2),
        ..RateSettings::default()
    };
    let (l, _) = manual(s);
    let who = person("a@example.com", &[]);
    // Two expensive operations pass, the third is refused by the
    // expensive bucket...
    l.check(&who, "run").expect("1st run");
    l.check(&who, "build").expect("1st build");
    let e = l.check(&who, "exec").expect_err("3rd expensive");
    assert_eq!(e.bucket, Bucket::Expensive);
    assert!(e.message.contains("(exec)"), "{}", e.message);
    // ...while ordinary operations still pass: 10 in all, counting the
    // three above (a refused request still took from the normal bucket).
    assert_eq!(passes(&l, &who, "apps"), 7);
    let e = l.check(&who, "run").expect_err("normal bucket empty");
    assert_eq!(e.bucket, Bucket::Identity);
    // The expensive bucket is per identity.
    l.check(&person("b@example.com", &[]), "run")
        .expect("another identity");
    // Operations not on the list never touch it.
    let (l, _) = manual(RateSettings {
        expensive: rate(1, Per::Hour, 1),
        ..RateSettings::default()
    });
    assert_eq!(passes(&l, &who, "releases create"), 40);
}

// --- failed authentication ----------------------------------------------------

#[test]
fn an_address_is_blocked_after_its_failure_budget_and_unblocked_when_it_refills() {
    let s = RateSettings {
        auth_failures: rate(3, Per::Minute, 3),
        ..RateSettings::default()
    };
    let (l, clock) = manual(s);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let other = IpAddr::V6(Ipv6Addr::LOCALHOST);
    for i in 0..3 {
        assert_eq!(l.auth_blocked(ip), None, "before failure {i}");
        l.auth_failed(ip);
    }
    let blocked = l.auth_blocked(ip).expect("blocked after 3 failures");
    assert_eq!(blocked.bucket, Bucket::AuthFailures);
    assert_eq!(blocked.retry_after, Duration::from_secs(20));
    assert_eq!(
        blocked.message,
        "too many failed authentication attempts from this address; retry in 20s"
    );
    // Checking takes nothing: still the same wait, and other addresses
    // are unaffected.
    assert_eq!(l.auth_blocked(ip), Some(blocked));
    assert_eq!(l.auth_blocked(other), None);

    clock.advance(Duration::from_secs(19));
    assert_eq!(
        l.auth_blocked(ip).map(|b| b.retry_after),
        Some(Duration::from_secs(1))
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(l.auth_blocked(ip), None, "one token back after 20 s");
    // One more failure uses it up again.
    l.auth_failed(ip);
    assert!(l.auth_blocked(ip).is_some());
    // A full refill gives the whole budget back.
    clock.advance(Duration::from_secs(60));
    for _ in 0..2 {
        l.auth_failed(ip);
        assert_eq!(l.auth_blocked(ip), None);
    }
    l.auth_failed(ip);
    assert!(l.auth_blocked(ip).is_some());
}

#[test]
fn failures_racing_past_the_block_extend_it() {
    let s = RateSettings {
        auth_failures: rate(1, Per::Minute, 1),
        ..RateSettings::default()
    };
    let (l, _) = manual(s);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
    l.auth_failed(ip);
    assert_eq!(
        l.auth_blocked(ip).map(|b| b.retry_after),
        Some(Duration::from_secs(60))
    );
    // Concurrent requests that were already past the check.
    l.auth_failed(ip);
    l.auth_failed(ip);
    let b = l.auth_blocked(ip).expect("blocked");
    assert!(b.retry_after >= Duration::from_secs(60), "{b:?}");
}

// --- memory ---------------------------------------------------------------------

#[test]
fn memory_is_bounded_keys_return_to_zero_after_retain_recent() {
    let (l, clock) = manual(RateSettings::default());
    assert_eq!(l.key_count(), 0);
    let roles: &[&str] = &[];
    for i in 0..100_000u32 {
        let name = format!("user{i}@example.com");
        let who = Who {
            name: &name,
            ci: i % 2 == 0,
            roles,
        };
        l.check(&who, if i % 10 == 0 { "run" } else { "apps" })
            .expect("first request of each identity passes");
    }
    for i in 0..1000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        for _ in 0..10 {
            l.auth_failed(ip);
        }
    }
    // 100k identities, 10k of them in the expensive bucket, 1000 addresses
    // each also blocked.
    assert_eq!(l.key_count(), 100_000 + 10_000 + 1000 + 1000);
    // Nothing is idle yet: nothing is dropped.
    l.retain_recent();
    assert_eq!(l.key_count(), 112_000);
    // Once every bucket has refilled (the slowest, auth failures, within a
    // minute; governor keeps a key for one more replenish interval), all
    // keys go.
    clock.advance(Duration::from_secs(60));
    l.retain_recent();
    assert!(l.key_count() <= 1000, "only auth failure keys may remain");
    clock.advance(Duration::from_secs(6));
    l.retain_recent();
    assert_eq!(l.key_count(), 0);
}

#[test]
fn reconfigured_keeps_buckets_whose_quota_did_not_change() {
    let mut s = RateSettings {
        default: rate(1, Per::Hour, 1),
        ..RateSettings::default()
    };
    let (l, _) = manual(s.clone());
    let who = person("a@example.com", &[]);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
    l.check(&who, "apps").expect("first");
    for _ in 0..10 {
        l.auth_failed(ip);
    }
    // Same quotas (a role added): the counts carry over.
    s.roles.insert("viewer".into(), rate(5, Per::Second, 5));
    let l2 = l.reconfigured(s.clone());
    assert!(l2.check(&who, "apps").is_err());
    assert!(l2.auth_blocked(ip).is_some());
    assert_eq!(l2.settings(), &s);
    // A changed quota starts fresh.
    s.default = rate(2, Per::Hour, 1);
    s.auth_failures = rate(11, Per::Minute, 11);
    let l3 = l2.reconfigured(s);
    assert!(l3.check(&who, "apps").is_ok());
    assert!(l3.auth_blocked(ip).is_none());
}

#[test]
fn limiters_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Limiters>();
    assert_send_sync::<RateClock>();
}

#[test]
fn the_monotonic_clock_moves_and_can_be_advanced() {
    let c = RateClock::monotonic();
    let a = c.now();
    c.advance(Duration::from_secs(10));
    let b = c.now();
    assert!(b.duration_since(a) >= Nanos::from(Duration::from_secs(10)));
    let m = RateClock::manual();
    assert_eq!(m.now(), Nanos::from(0));
    let m2 = m.clone();
    m.advance(Duration::from_millis(5));
    assert_eq!(m2.now(), Nanos::from(Duration::from_millis(5)));
}
