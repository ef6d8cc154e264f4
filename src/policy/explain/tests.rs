//! `can --explain` reaches the engine's verdict: over the example config's
//! identities (and a fixture with step-up, expiry, blocked-list
//! exceptions, inheritance and command denies) × every operation × racks,
//! apps, services, commands and target processes.

use super::*;
use crate::policy::conditions::Auth;
use crate::policy::load::parse_time;
use crate::policy::operations;
use crate::policy::test_support::{policy, GATEWAY};

fn example() -> Policy {
    policy(&[
        (
            "roles/admin.yaml",
            include_str!("../../../roles/admin.yaml"),
        ),
        (
            "roles/deployer.yaml",
            include_str!("../../../roles/deployer.yaml"),
        ),
        ("roles/ops.yaml", include_str!("../../../roles/ops.yaml")),
        (
            "roles/viewer.yaml",
            include_str!("../../../roles/viewer.yaml"),
        ),
        ("users.yaml", include_str!("../../../users.yaml.example")),
        ("ci.yaml", include_str!("../../../ci.yaml.example")),
    ])
}

/// Step-up, expiry, an exception to the blocked list, a role deny on
/// another grant, inheritance two deep, command denies.
fn fixture() -> Policy {
    let gateway = format!(
        "{GATEWAY}policy:\n  blocked: [instances ssh, apps delete]\n  exceptions:\n    - {{role: root, operations: [instances ssh]}}\n"
    );
    let mut p = vec![
        ("roles/viewer.yaml", "allow: [apps, apps info, ps, rack]\n"),
        (
            "roles/runner.yaml",
            "inherits: [viewer]\nallow: [run, exec, ps stop, files download]\ncommands:\n  allow:\n    web: [\"bin/**\", \"**\"]\n    command: [rake db:migrate]\n  deny:\n    web: [rails console]\n",
        ),
        ("roles/mfa-runner.yaml", "inherits: [runner]\nrequire: {mfa: true, max_auth_age: 12h}\n"),
        ("roles/no-ps.yaml", "deny: [ps]\n"),
        ("roles/root.yaml", "allow: ['*']\n"),
        (
            "users.yaml",
            "users:\n  a@x.com:\n    grants:\n      - {role: viewer, scope: staging/*}\n      - {role: mfa-runner, scope: production/*}\n      - {role: no-ps, scope: staging/billing}\n      - {role: root, scope: staging/system, expires: 2026-12-01T12:00:00Z}\n  b@x.com:\n    expires: 2026-12-01T11:00:00Z\n    grants:\n      - {role: runner, scope: \"*\"}\n  c@x.com:\n    deny: [rack]\n    grants:\n      - {role: root, scope: \"*/system\"}\n      - {role: runner, scope: staging/*, require: {mfa: true}}\n",
        ),
    ];
    p.push(("gateway.yaml", gateway.leak()));
    policy(&p)
}

/// Every explanation's conclusion is the engine's verdict.
/// Returns (questions, allowed).
fn agrees(p: &Policy, auths: &[Option<&Auth>], now: i64) -> (usize, usize) {
    let mut subjects: Vec<&Subject> = p.users.values().chain(p.ci.values()).collect();
    subjects.sort_by(|a, b| a.name.cmp(&b.name));
    let services = [None, Some("web"), Some("command"), Some("build")];
    let commands = [
        None,
        Some("bin/web"),
        Some("rake db:migrate"),
        Some("rails console"),
        Some("sleep 3600"),
    ];
    let processes = ["-", "sleep 3600"];
    let mut checked = 0;
    let mut allowed = 0;
    for s in subjects {
        for op in operations() {
            let detailed = matches!(
                *op,
                "run" | "exec" | "ps stop" | "files download" | "files upload"
            );
            for rack in ["staging", "production"] {
                for app in [
                    None,
                    Some("myapp"),
                    Some("billing"),
                    Some("app"),
                    Some("system"),
                ] {
                    for auth in auths {
                        let svcs: &[Option<&str>] = if detailed { &services } else { &[None] };
                        for service in svcs {
                            let cmds: &[Option<&str>] = if detailed { &commands } else { &[None] };
                            for command in cmds {
                                let procs: &[&str] = if detailed { &processes } else { &["-"] };
                                for pc in procs {
                                    let process = Process {
                                        service: service.unwrap_or_default().to_string(),
                                        command: pc.to_string(),
                                    };
                                    let f = Facts {
                                        rack,
                                        operation: op,
                                        app,
                                        service: *service,
                                        command: *command,
                                        now: Some(now),
                                        auth: *auth,
                                        ..Facts::default()
                                    };
                                    let v = p.decide_assuming(s, &f, &process);
                                    let e = explain(p, s, &f, &process);
                                    assert_eq!(
                                        e.allowed,
                                        v.is_allow(),
                                        "{} {op} on {rack}/{app:?} service {service:?} command {command:?} process {pc:?}: verdict {v:?}, trace:\n{}",
                                        s.name,
                                        e.lines.join("\n")
                                    );
                                    let last = e.lines.last().map(String::as_str).unwrap_or("");
                                    let want = if v.is_allow() {
                                        "decided: allow by "
                                    } else {
                                        "decided: deny by "
                                    };
                                    assert!(last.starts_with(want), "{last}");
                                    checked += 1;
                                    allowed += usize::from(e.allowed);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (checked, allowed)
}

fn t(s: &str) -> i64 {
    parse_time(s).unwrap_or_else(|| panic!("bad time {s}"))
}

#[test]
fn the_conclusion_is_the_verdict_on_the_example_config() {
    let (n, allowed) = agrees(&example(), &[None], t("2026-12-01T10:00:00Z"));
    assert!(n > 10_000, "only {n} questions");
    assert!(
        allowed > 1_000 && allowed < n / 2,
        "{allowed} of {n} allowed"
    );
}

#[test]
fn the_conclusion_is_the_verdict_with_step_up_expiry_and_exceptions() {
    let now = t("2026-12-01T11:30:00Z");
    let mfa = Auth {
        amr: vec!["pwd".into(), "otp".into()],
        auth_time: Some(now - 60),
        ..Auth::default()
    };
    let stale = Auth {
        amr: vec!["otp".into()],
        auth_time: Some(now - 86_400),
        ..Auth::default()
    };
    let p = fixture();
    let (n, allowed) = agrees(&p, &[None, Some(&mfa), Some(&stale)], now);
    assert!(n > 10_000, "only {n} questions");
    assert!(
        allowed > 1_000 && allowed < n / 2,
        "{allowed} of {n} allowed"
    );
}

#[test]
fn the_trace_names_grants_roles_and_the_deciding_rule() {
    let p = fixture();
    let now = t("2026-12-01T11:30:00Z");
    let a = p.find_subject("a@x.com").unwrap();
    let process = Process {
        service: "web".into(),
        command: "-".into(),
    };
    let f = Facts {
        rack: "production",
        operation: "run",
        app: Some("myapp"),
        service: Some("web"),
        command: Some("rails console"),
        now: Some(now),
        ..Facts::default()
    };
    let e = explain(&p, a, &f, &process);
    let text = e.lines.join("\n");
    assert!(!e.allowed, "{text}");
    for want in [
        "identity a@x.com (users.yaml:3): no expiry",
        "  grant viewer on staging/* (users.yaml:4): does not cover production/myapp: rack production is outside staging",
        "  grant mfa-runner on production/* (users.yaml:5): covers production/myapp",
        "  grant root on staging/system (users.yaml:7): does not cover production/myapp: rack production is outside staging (expires 2026-12-01T12:00:00Z)",
        "    role mfa-runner (roles/mfa-runner.yaml): allows \"run\" (roles/runner.yaml:2)",
        "      inherits runner (roles/runner.yaml): allows \"run\" (roles/runner.yaml:2)",
        "        inherits viewer (roles/viewer.yaml): neither allows nor denies \"run\"",
        "    step-up unmet: mfa-runner on production/* (roles/mfa-runner.yaml:2) needs a login with MFA in the last 12h: run rack-gateway login production <gateway url>",
        "decided: deny by the unmet step-up of mfa-runner on production/* (users.yaml:5)",
    ] {
        assert!(e.lines.iter().any(|l| l == want), "missing {want:?} in:\n{text}");
    }
    // Control: with a fresh MFA login the same grant allows a command
    // its role allows, and names the rule.
    let mfa = Auth {
        amr: vec!["otp".into()],
        auth_time: Some(now - 60),
        ..Auth::default()
    };
    let ok = Facts {
        command: Some("bin/web"),
        auth: Some(&mfa),
        ..f
    };
    let e = explain(&p, a, &ok, &process);
    let text = e.lines.join("\n");
    assert!(e.allowed, "{text}");
    for want in [
        "      mfa-runner forbids \"rails console\" (roles/runner.yaml:8): does not match",
        "      mfa-runner allows \"bin/**\" (roles/runner.yaml:5): matches",
        "decided: allow by mfa-runner (roles/runner.yaml:5) allowing \"bin/**\"",
    ] {
        assert!(
            e.lines.iter().any(|l| l == want),
            "missing {want:?} in:\n{text}"
        );
    }
}

#[test]
fn the_trace_names_expiries_blocked_entries_and_exceptions() {
    let p = fixture();
    let now = t("2026-12-01T11:30:00Z");
    let process = Process {
        service: "web".into(),
        command: "-".into(),
    };
    let ask = |who: &str, op: &'static str, rack: &'static str, app: Option<&'static str>| {
        let s = p.find_subject(who).unwrap();
        let f = Facts {
            rack,
            operation: op,
            app,
            now: Some(now),
            ..Facts::default()
        };
        explain(&p, s, &f, &process)
    };
    let e = ask("b@x.com", "ps", "staging", Some("myapp"));
    assert!(!e.allowed);
    assert_eq!(
        e.lines[0],
        "identity b@x.com (users.yaml:9): EXPIRED at 2026-12-01T11:00:00Z"
    );
    assert_eq!(
        e.lines.last().unwrap(),
        "decided: deny by the expiry of b@x.com's entry (users.yaml:9)"
    );
    let e = ask("a@x.com", "instances ssh", "staging", Some("system"));
    let text = e.lines.join("\n");
    assert!(e.allowed, "{text}");
    for want in [
        "    blocked list: \"instances ssh\" is blocked (gateway.yaml:9)",
        "    exception for root (gateway.yaml:11): applies",
    ] {
        assert!(
            e.lines.iter().any(|l| l == want),
            "missing {want:?} in:\n{text}"
        );
    }
    let e = ask("a@x.com", "apps delete", "staging", Some("system"));
    assert!(!e.allowed);
    assert_eq!(
        e.lines.last().unwrap(),
        "decided: deny by the blocked list (gateway.yaml:9)"
    );
    let e = ask("a@x.com", "ps", "staging", Some("billing"));
    assert!(!e.allowed);
    assert_eq!(
        e.lines.last().unwrap(),
        "decided: deny by no-ps's deny (roles/no-ps.yaml:1), granted on staging/billing"
    );
}
