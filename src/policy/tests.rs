//! Unit tests of the decision engine (see tests/it for the same rules
//! through the real server).
//!
//! Policies are loaded from YAML through the real config loader, so the
//! shipped roles and the example users file are what is tested; the
//! property tests at the end build [`Policy`] values directly, for speed.

use super::test_support::{policy, try_load, GATEWAY};
use super::*;
use crate::config::{ConfigError, ConfigErrors};

const ADMIN: &str = include_str!("../../roles/admin.yaml");
const DEPLOYER: &str = include_str!("../../roles/deployer.yaml");
const OPS: &str = include_str!("../../roles/ops.yaml");
const VIEWER: &str = include_str!("../../roles/viewer.yaml");
const USERS_EXAMPLE: &str = include_str!("../../users.yaml.example");

fn load_errors(files: &[(&str, &str)]) -> Vec<ConfigError> {
    match try_load(files) {
        Ok(_) => panic!("expected load errors"),
        Err(e) => e.0,
    }
}

/// The shipped roles, the example users, and `extra` files.
fn shipped(extra: &[(&str, &str)]) -> Policy {
    let mut files = vec![
        ("roles/admin.yaml", ADMIN),
        ("roles/deployer.yaml", DEPLOYER),
        ("roles/ops.yaml", OPS),
        ("roles/viewer.yaml", VIEWER),
        ("users.yaml", USERS_EXAMPLE),
    ];
    files.extend_from_slice(extra);
    policy(&files)
}

/// The 1-based line of the first line of `text` containing `needle`, so
/// expectations follow edits of the shipped files.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in text"))
        + 1
}

fn user<'p>(p: &'p Policy, email: &str) -> &'p Subject {
    p.subject(SubjectKind::User, email)
        .unwrap_or_else(|| panic!("no user {email}"))
}

fn op<'a>(rack: &'a str, app: Option<&'a str>, operation: &'a str) -> Facts<'a> {
    Facts {
        rack,
        operation,
        app,
        ..Facts::default()
    }
}

fn run<'a>(rack: &'a str, service: &'a str, command: &'a str) -> Facts<'a> {
    Facts {
        rack,
        operation: "run",
        app: Some("myapp"),
        service: Some(service),
        command: Some(command),
        ..Facts::default()
    }
}

/// Exec into `process` the way the gateway asks after its lookup (the exec
/// route carries no service of its own).
fn exec<'a>(rack: &'a str, command: &'a str, process: &'a Process) -> Facts<'a> {
    Facts {
        rack,
        operation: "exec",
        app: Some("myapp"),
        command: Some(command),
        process: Some(process),
        ..Facts::default()
    }
}

fn process(service: &str, command: &str) -> Process {
    Process {
        service: service.into(),
        command: command.into(),
    }
}

#[track_caller]
fn allowed(v: Verdict) -> String {
    match v {
        Verdict::Allow(r) => r,
        other => panic!("expected allow, got {other:?}"),
    }
}

#[track_caller]
fn denied(v: Verdict) -> String {
    match v {
        Verdict::Deny(r) => r,
        other => panic!("expected deny, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Deny wins at every level

#[test]
fn global_blocked_list_beats_admin() {
    let p = shipped(&[]);
    let carol = user(&p, "carol@example.com");
    for blocked in [
        "rack update",
        "rack access",
        "rack access key rotate",
        "kubernetes",
        "registry proxy",
        "proxy http",
        "instances keyroll",
        "instances ssh",
    ] {
        let r = denied(p.decide(carol, &op("production", None, blocked)));
        assert!(
            r.contains(&format!(
                "\"{blocked}\" is blocked for everyone by the gateway policy (built-in default)"
            )),
            "{r}"
        );
    }
    allowed(p.decide(carol, &op("production", None, "instances terminate")));
}

#[test]
fn configured_blocked_list_replaces_the_default_and_names_its_line() {
    let gw = format!("{GATEWAY}policy:\n  blocked:\n    - apps delete\n    - certs *\n");
    let p = shipped(&[("gateway.yaml", &gw)]);
    let carol = user(&p, "carol@example.com");
    // The reason cites the list (its first entry), not the matching entry.
    let r = denied(p.decide(carol, &op("staging", None, "certs import")));
    assert_eq!(
        r,
        "denied: \"certs import\" is blocked for everyone by the gateway policy (gateway.yaml:11)"
    );
    allowed(p.decide(carol, &op("staging", None, "rack update")));

    let gw = format!("{GATEWAY}policy:\n  blocked: []\n");
    let p = shipped(&[("gateway.yaml", &gw)]);
    allowed(p.decide(
        user(&p, "carol@example.com"),
        &op("staging", None, "instances ssh"),
    ));
}

/// The break-glass role gateway.yaml.example suggests: excepted from
/// `instances ssh` and `rack update`, but allowing only `instances *`
/// itself.
fn break_glass(users: &str) -> Policy {
    let gw = format!(
        "{GATEWAY}policy:\n  exceptions:\n    - role: break-glass\n      operations: [instances ssh, rack update]\n"
    );
    shipped(&[
        ("gateway.yaml", &gw),
        ("roles/break-glass.yaml", "allow:\n  - instances *\n"),
        ("roles/no-ssh.yaml", "deny:\n  - instances ssh\n"),
        ("users.yaml", users),
    ])
}

#[test]
fn exception_covers_only_listed_operations_the_role_allows() {
    let p = break_glass(
        "users:\n  bg@x.com:\n    grants:\n      - role: break-glass\n        scope: production/*\n      - role: admin\n        scope: staging/*\n",
    );
    let bg = user(&p, "bg@x.com");
    let r = allowed(p.decide(bg, &op("production", None, "instances ssh")));
    assert!(r.contains("break-glass (roles/break-glass.yaml:2)"), "{r}");
    // Listed, but the role itself does not allow it.
    let r = denied(p.decide(bg, &op("production", None, "rack update")));
    assert!(r.contains("blocked for everyone"), "{r}");
    // Allowed by the role, but not listed.
    let r = denied(p.decide(bg, &op("production", None, "instances keyroll")));
    assert!(r.contains("blocked for everyone"), "{r}");
    // The exception belongs to the role, not the person: admin on staging
    // gets nothing from it.
    let r = denied(p.decide(bg, &op("staging", None, "instances ssh")));
    assert!(r.contains("blocked for everyone"), "{r}");
}

#[test]
fn exception_does_not_beat_a_deny() {
    let p = break_glass(
        "users:\n  bg@x.com:\n    grants:\n      - role: break-glass\n        scope: production/*\n      - role: no-ssh\n        scope: production/*\n  self@x.com:\n    grants:\n      - role: break-glass\n        scope: production/*\n    deny: [instances ssh]\n",
    );
    let r = denied(p.decide(
        user(&p, "bg@x.com"),
        &op("production", None, "instances ssh"),
    ));
    assert!(
        r.contains("no-ssh denies \"instances ssh\" (roles/no-ssh.yaml:2)"),
        "{r}"
    );
    let r = denied(p.decide(
        user(&p, "self@x.com"),
        &op("production", None, "instances ssh"),
    ));
    assert!(r.contains("self@x.com is denied \"instances ssh\""), "{r}");
}

#[test]
fn user_deny_beats_every_role() {
    let p = shipped(&[]);
    let carol = user(&p, "carol@example.com");
    let r = denied(p.decide(carol, &op("production", Some("billing"), "apps delete")));
    let line = line_of(USERS_EXAMPLE, "- apps delete");
    assert_eq!(
        r,
        format!("denied: carol@example.com is denied \"apps delete\" (users.yaml:{line})")
    );
    allowed(p.decide(carol, &op("production", Some("billing"), "apps update")));
}

#[test]
fn role_deny_in_one_grant_beats_allow_in_another() {
    let users = "users:\n  u@x.com:\n    grants:\n      - role: admin\n        scope: \"*\"\n      - role: careful\n        scope: staging/*\n      - role: careful\n        scope: production/billing\n";
    let p = shipped(&[
        (
            "roles/careful.yaml",
            "allow:\n  - apps\ndeny:\n  - apps delete\n  - releases promote\n",
        ),
        ("users.yaml", users),
    ]);
    let u = user(&p, "u@x.com");
    let r = denied(p.decide(u, &op("staging", Some("myapp"), "apps delete")));
    assert_eq!(
        r,
        "denied: careful denies \"apps delete\" (roles/careful.yaml:4)"
    );
    denied(p.decide(u, &op("production", Some("billing"), "releases promote")));
    // The deny applies only where its grant applies.
    allowed(p.decide(u, &op("production", Some("myapp"), "apps delete")));
    allowed(p.decide(u, &op("production", Some("myapp"), "releases promote")));
}

// ---------------------------------------------------------------------------
// Scope

#[test]
fn app_scoped_grant_does_not_leak() {
    let p = shipped(&[(
        "users.yaml",
        "users:\n  bob@x.com:\n    grants:\n      - role: ops\n        scope: production/billing\n",
    )]);
    let bob = user(&p, "bob@x.com");
    allowed(p.decide(bob, &op("production", Some("billing"), "restart")));
    // The refusal names the identity's own entry, the rule to edit.
    let r = denied(p.decide(bob, &op("production", Some("myapp"), "restart")));
    assert_eq!(
        r,
        "denied: bob@x.com may not \"restart\" on production/myapp (no grant there; bob@x.com's entry users.yaml:3)"
    );
    let r = denied(p.decide(bob, &op("staging", Some("billing"), "restart")));
    assert_eq!(
        r,
        "denied: bob@x.com may not \"restart\" on staging/billing (no grant there; bob@x.com's entry users.yaml:3)"
    );
    // Rack-level reads the CLI needs on the way (GET /system, login) are
    // covered; rack-wide listings are not.
    allowed(p.decide(bob, &op("production", None, "rack")));
    allowed(p.decide(bob, &op("production", None, "login")));
    for rack_wide in ["apps", "instances", "rack ps", "certs"] {
        let r = denied(p.decide(bob, &op("production", None, rack_wide)));
        assert_eq!(
            r,
            format!("denied: bob@x.com may not \"{rack_wide}\" on production (no grant there; bob@x.com's entry users.yaml:3)"),
            "{rack_wide}"
        );
    }
    denied(p.decide(bob, &op("staging", None, "rack")));
}

#[test]
fn a_refusal_lists_the_grants_it_considered_with_their_lines() {
    let users = "users:\n  eve@x.com:\n    grants:\n      - {role: viewer, scope: staging/*}\n      - {role: viewer, scope: staging/my*}\n      - {role: viewer, scope: \"*/myapp\"}\n      - {role: viewer, scope: \"*\"}\n      - {role: deployer, scope: production/*}\n";
    let p = shipped(&[("users.yaml", users)]);
    let eve = user(&p, "eve@x.com");
    let r = denied(p.decide(eve, &op("staging", Some("myapp"), "restart")));
    assert_eq!(
        r,
        "denied: eve@x.com may not \"restart\" on staging/myapp (granted there: viewer users.yaml:4, viewer users.yaml:5, viewer users.yaml:6, +1 more)"
    );
    // Control: the grant that allows it on production.
    allowed(p.decide(eve, &op("production", Some("myapp"), "releases promote")));
}

#[test]
fn rack_and_app_globs() {
    let gw = GATEWAY.replace("production:", "prod-eu:")
        + "  prod-us:\n    url: https://us.example.com\n    password_env: PW\n";
    let p = shipped(&[
        ("gateway.yaml", &gw),
        (
            "users.yaml",
            "users:\n  g@x.com:\n    grants:\n      - role: viewer\n        scope: prod-*/bill*\n",
        ),
    ]);
    let g = user(&p, "g@x.com");
    allowed(p.decide(g, &op("prod-eu", Some("billing"), "ps")));
    allowed(p.decide(g, &op("prod-us", Some("billing-v2"), "ps")));
    denied(p.decide(g, &op("staging", Some("billing"), "ps")));
    denied(p.decide(g, &op("prod-us", Some("myapp"), "ps")));
}

// ---------------------------------------------------------------------------
// Secret permissions, env key patterns, protected env keys

#[test]
fn secret_permissions_are_inherited_and_scoped_to_the_allowing_roles() {
    let gw = GATEWAY.to_string() + "policy:\n  protected_env:\n    \"staging/my*\": [DATABASE_*]\n";
    let p = shipped(&[
        ("gateway.yaml", &gw),
        (
            "roles/featurer.yaml",
            "inherits: [deployer]\nenv_keys: [FEATURE_*]\n",
        ),
        ("roles/child.yaml", "inherits: [featurer]\nenv_keys: [OTHER]\n"),
        (
            "users.yaml",
            "users:\n  a@x.com:\n    grants:\n      - role: admin\n        scope: staging/*\n      - role: viewer\n        scope: production/*\n  f@x.com:\n    grants:\n      - role: child\n        scope: staging/*\n",
        ),
    ]);
    let a = user(&p, "a@x.com");
    let on_staging = p.secret_access(a, &op("staging", Some("myapp"), "releases info"));
    assert!(on_staging.read && on_staging.env_protected && on_staging.builds_external);
    assert!(on_staging.env_keys.is_none());
    let on_prod = p.secret_access(a, &op("production", Some("myapp"), "releases info"));
    assert!(!on_prod.read && !on_prod.env_protected && !on_prod.builds_external);

    let f = user(&p, "f@x.com");
    let access = p.secret_access(f, &op("staging", Some("myapp"), "releases create"));
    assert!(!access.read);
    let keys: Vec<&str> = access
        .env_keys
        .iter()
        .flatten()
        .map(|g| g.as_str())
        .collect();
    assert_eq!(keys, ["OTHER", "FEATURE_*"]);

    assert!(p.is_protected_env("staging", "myapp", "DATABASE_URL"));
    assert!(!p.is_protected_env("staging", "myapp", "SECRET_KEY"));
    assert!(!p.is_protected_env("production", "myapp", "DATABASE_URL"));
}

#[test]
fn unknown_permissions_and_bad_protected_scopes_are_load_errors() {
    let errors = load_errors(&[
        (
            "roles/r.yaml",
            "permissions: [secrets write]\nenv_keys: [\"A=B\"]\n",
        ),
        (
            "gateway.yaml",
            &(GATEWAY.to_string() + "policy:\n  protected_env:\n    staging: [X]\n"),
        ),
    ]);
    let text: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
    assert!(
        text.iter()
            .any(|m| m.contains("`secrets write` is not a permission")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|m| m.contains("env_keys: `A=B`")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|m| m.contains("`staging` is not <rack glob>/<app glob>")),
        "{text:?}"
    );
}

// ---------------------------------------------------------------------------
// Inheritance

#[test]
fn child_gets_parent_allows_denies_and_commands() {
    let p = policy(&[
        (
            "roles/base.yaml",
            "allow:\n  - apps\n  - ps\ndeny:\n  - ps stop\ncommands:\n  allow:\n    command:\n      - rake x\n",
        ),
        (
            "roles/middle.yaml",
            "inherits: [base]\nallow:\n  - run\n",
        ),
        (
            "roles/child.yaml",
            "inherits: [middle]\nallow:\n  - ps stop\n",
        ),
        (
            "users.yaml",
            "users:\n  c@x.com:\n    grants:\n      - role: child\n        scope: staging/*\n",
        ),
    ]);
    let c = user(&p, "c@x.com");
    let r = allowed(p.decide(c, &op("staging", Some("a"), "apps")));
    assert_eq!(r, "allowed: child (roles/base.yaml:2) on staging/*");
    let web = process("web", "bin/web");
    let stop = Facts {
        process: Some(&web),
        ..op("staging", Some("a"), "ps stop")
    };
    let r = denied(p.decide(c, &stop));
    assert_eq!(r, "denied: child denies \"ps stop\" (roles/base.yaml:5)");
    let r = allowed(p.decide(c, &run("staging", "command", "rake x")));
    assert!(r.contains("child (roles/base.yaml:"), "{r}");
    denied(p.decide(c, &run("staging", "command", "rake y")));
    denied(p.decide(c, &op("staging", Some("a"), "releases")));
}

#[test]
fn admin_inherits_deployer_and_ops() {
    let p = shipped(&[]);
    let admin = &p.roles[p.role_index["admin"]];
    for role in ["deployer", "ops", "viewer"] {
        let r = &p.roles[p.role_index[role]];
        assert_eq!(r.allow.minus(admin.allow), OpSet::default(), "{role}");
        for rule in &r.commands_allow {
            assert!(
                admin
                    .commands_allow
                    .iter()
                    .any(|a| a.pattern.source == rule.pattern.source && a.at == rule.at),
                "{role}: {}",
                rule.pattern.source
            );
        }
    }
}

#[test]
fn inheritance_cycles_and_undefined_parents_are_load_errors() {
    let errs = load_errors(&[
        ("roles/a.yaml", "inherits: [b]\nallow: [apps]\n"),
        ("roles/b.yaml", "allow: [ps]\ninherits:\n  - c\n"),
        ("roles/c.yaml", "inherits: [a]\n"),
    ]);
    let text = ConfigErrors(errs.clone()).to_string();
    assert!(
        errs.iter().any(|e| e.file == "t:roles/c.yaml"
            && e.line == Some(1)
            && e.message == "role `c` inherits `a`, which forms a cycle"),
        "{text}"
    );

    let errs = load_errors(&[("roles/a.yaml", "allow: [apps]\ninherits: [nope]\n")]);
    assert_eq!(
        ConfigErrors(errs).to_string(),
        "t:roles/a.yaml:2:12: role `a` inherits undefined role `nope`"
    );

    let errs = load_errors(&[("roles/a.yaml", "inherits: [a]\n")]);
    assert!(errs[0].message.contains("forms a cycle"), "{errs:?}");
}

// ---------------------------------------------------------------------------
// run and exec

/// alice: deployer on staging/*, viewer on production/*.
fn alice(p: &Policy) -> &Subject {
    user(p, "alice@example.com")
}

/// Command rules cite the line of the first pattern in their list.
fn deployer_commands_line() -> usize {
    line_of(DEPLOYER, "- bin/pre_release")
}

#[test]
fn attached_run_needs_a_command_rule_for_the_service() {
    let p = shipped(&[]);
    let r = allowed(p.decide(alice(&p), &run("staging", "command", "sleep 3600")));
    assert!(r.contains("attached run"), "{r}");
    allowed(p.decide(alice(&p), &run("staging", "command", "sleep 60")));
    let r = denied(p.decide(alice(&p), &run("staging", "web", "sleep 3600")));
    assert_eq!(
        r,
        "denied: deployer may not \"run\" on service web (roles/deployer.yaml)"
    );
    // viewer on production: no run at all
    denied(p.decide(alice(&p), &run("production", "command", "sleep 3600")));
}

#[test]
fn detached_run_is_checked_against_the_allowlist() {
    let p = shipped(&[]);
    let r = allowed(p.decide(alice(&p), &run("staging", "command", "rake db:migrate")));
    assert_eq!(
        r,
        format!(
            "allowed: deployer (roles/deployer.yaml:{}) allows \"rake db:migrate\" on service command",
            deployer_commands_line()
        )
    );
    allowed(p.decide(
        alice(&p),
        &run("staging", "command", "run_as_deploy rake checks:all"),
    ));
    let r = denied(p.decide(alice(&p), &run("staging", "command", "rails console")));
    assert_eq!(
        r,
        format!(
            "denied: \"run\" of \"rails console\" on service command: deployer may run only bin/pre_release, rake db:migrate, rake stripe:prepare, run_as_deploy rake checks:* (roles/deployer.yaml:{})",
            deployer_commands_line()
        )
    );
    allowed(p.decide(
        user(&p, "carol@example.com"),
        &run("staging", "command", "rails console"),
    ));
}

#[test]
fn quoting_is_resolved_like_the_rack_does() {
    let p = shipped(&[]);
    let a = alice(&p);
    for same in [
        "rake \"db:migrate\"",
        "rake 'db:migrate'",
        "  rake\tdb:migrate ",
        "rake db\\:migrate",
    ] {
        allowed(p.decide(a, &run("staging", "command", same)));
    }
    for different in [
        "rake db:migrate; rm -rf /",
        "rake db:migrate && rm -rf /",
        "rake db:migrate extra",
        "\"rake db:migrate\"",
        "rake db:migrate\nrm -rf /",
        "bash -c 'rake db:migrate'",
    ] {
        denied(p.decide(a, &run("staging", "command", different)));
    }
    let r = denied(p.decide(a, &run("staging", "command", "rake 'db:migrate")));
    assert_eq!(
        r,
        "denied: \"run\" of command \"rake 'db:migrate\": unterminated single quote"
    );
    let r = denied(p.decide(a, &run("staging", "command", "rake \"db:migrate")));
    assert!(r.contains("unterminated double quote"), "{r}");
    let r = denied(p.decide(a, &run("staging", "command", "")));
    assert_eq!(r, "denied: \"run\" without a command is refused");
}

#[test]
fn exec_into_a_placeholder_is_checked_as_run_on_its_service() {
    let p = shipped(&[]);
    let a = alice(&p);
    let placeholder = process("command", "sleep 3600");
    let r = allowed(p.decide(a, &exec("staging", "rake db:migrate", &placeholder)));
    assert!(
        r.contains("allows \"rake db:migrate\" on service command"),
        "{r}"
    );
    let r = denied(p.decide(a, &exec("staging", "rails console", &placeholder)));
    assert!(
        r.contains("may run only bin/pre_release") && r.contains("of \"rails console\""),
        "{r}"
    );
    // The service is the one the rack reports, never one the client names.
    let on_web = process("web", "sleep 3600");
    let mut f = exec("staging", "rake db:migrate", &on_web);
    f.service = Some("command");
    denied(p.decide(a, &f));
    // Without the process the engine asks for it.
    let mut f = exec("staging", "rake db:migrate", &placeholder);
    f.process = None;
    assert_eq!(p.decide(a, &f), Verdict::NeedProcess);
}

#[test]
fn exec_into_other_processes_needs_exec() {
    let p = shipped(&[]);
    let web = process("web", "bin/web");
    let r = denied(p.decide(alice(&p), &exec("staging", "rake db:migrate", &web)));
    // The refusal names each grant it considered, with its line.
    let line = line_of(USERS_EXAMPLE, "role: deployer");
    assert_eq!(
        r,
        format!("denied: alice@example.com may not \"exec\" on staging/myapp (granted there: deployer users.yaml:{line})")
    );
    // `sleep 3600 && x` is not the placeholder.
    let fake = process("command", "sleep 3600 && bin/web");
    denied(p.decide(alice(&p), &exec("staging", "rake db:migrate", &fake)));
    allowed(p.decide(
        user(&p, "carol@example.com"),
        &exec("staging", "rails console", &web),
    ));
    // No exec and no run: denied before any lookup.
    let mut f = exec("production", "ls", &web);
    f.process = None;
    denied(p.decide(alice(&p), &f));
}

#[test]
fn stopping_a_placeholder_needs_only_run() {
    let p = shipped(&[(
        "users.yaml",
        "users:\n  d@x.com:\n    grants:\n      - role: deployer\n        scope: staging/*\n  o@x.com:\n    grants:\n      - role: ops\n        scope: staging/*\n  v@x.com:\n    grants:\n      - role: viewer\n        scope: staging/*\n",
    )]);
    let stop = |who: &str, proc_: Option<&Process>| {
        let f = Facts {
            process: proc_,
            ..op("staging", Some("myapp"), "ps stop")
        };
        p.decide(user(&p, who), &f)
    };
    let placeholder = process("command", "sleep 3600");
    let web = process("web", "bin/web");
    assert_eq!(stop("d@x.com", None), Verdict::NeedProcess);
    let r = allowed(stop("d@x.com", Some(&placeholder)));
    assert!(r.contains("placeholder process"), "{r}");
    let r = denied(stop("d@x.com", Some(&web)));
    assert!(r.contains("may not \"ps stop\""), "{r}");
    // A placeholder on a service the role may not run on.
    denied(stop("d@x.com", Some(&process("web", "sleep 3600"))));
    // ops may stop anything, without asking the rack.
    allowed(stop("o@x.com", None));
    // viewer: no ps stop, no run, no lookup.
    denied(stop("v@x.com", None));
}

#[test]
fn the_build_service_never_runs() {
    let p = shipped(&[]);
    let carol = user(&p, "carol@example.com");
    for cmd in ["sleep 3600", "ls"] {
        let r = denied(p.decide(carol, &run("staging", "build", cmd)));
        assert!(r.contains("on service build is refused"), "{r}");
    }
    allowed(p.decide(carol, &run("staging", "worker", "ls")));
}

#[test]
fn restricted_run_headers_need_run_headers() {
    let p = shipped(&[
        (
            "roles/imager.yaml",
            "allow: [run]\ncommands:\n  allow:\n    \"*\": [\"**\"]\nrun_headers: [Image]\n",
        ),
        (
            "users.yaml",
            "users:\n  a@x.com:\n    grants:\n      - role: admin\n        scope: \"*\"\n  i@x.com:\n    grants:\n      - role: imager\n        scope: \"*\"\n",
        ),
    ]);
    let with = |who: &str, headers: &[&str]| {
        let f = Facts {
            run_headers: headers,
            ..run("staging", "command", "sleep 3600")
        };
        p.decide(user(&p, who), &f)
    };
    for h in ["image", "privileged", "volumes", "environment"] {
        let r = denied(with("a@x.com", &[h]));
        assert_eq!(
            r,
            format!("denied: the {h} header on \"run\" is not granted to a@x.com (roles may allow it with run_headers)")
        );
    }
    allowed(with("a@x.com", &["node-labels", "system-critical"]));
    allowed(with("i@x.com", &["image"]));
    denied(with("i@x.com", &["image", "privileged"]));
}

// ---------------------------------------------------------------------------
// Processes: {pid}, app `system`, files, placeholders bound to their creator

use super::placeholder::{Owner, TAG_DIGITS};
use super::process::{check_file_values, check_not_service, check_pid, targets_pod};

/// d: deployer, o: ops, a: admin on staging/*; s: admin on staging/system;
/// g: admin on staging/sys*; f: files + exec of anything on web, except
/// `rm **`; r: files + exec of `rails console` only; u: files + run `**`.
fn process_policy() -> Policy {
    shipped(&[
        (
            "roles/filer.yaml",
            "allow: [files download, files upload, files delete, exec]\ncommands:\n  allow:\n    web: [\"**\"]\n",
        ),
        (
            "roles/careful.yaml",
            "inherits: [filer]\ncommands:\n  deny:\n    web: [\"rm **\"]\n",
        ),
        (
            "roles/consoler.yaml",
            "allow: [files download, exec]\ncommands:\n  allow:\n    web: [rails console]\n",
        ),
        (
            "roles/runner.yaml",
            "allow: [files download, run]\ncommands:\n  allow:\n    command: [\"**\"]\n",
        ),
        (
            "users.yaml",
            "users:\n  d@x.com:\n    grants:\n      - role: deployer\n        scope: staging/*\n  o@x.com:\n    grants:\n      - role: ops\n        scope: staging/*\n  a@x.com:\n    grants:\n      - role: admin\n        scope: staging/*\n  s@x.com:\n    grants:\n      - role: admin\n        scope: staging/system\n  g@x.com:\n    grants:\n      - role: admin\n        scope: staging/sys*\n  f@x.com:\n    grants:\n      - role: filer\n        scope: staging/*\n  c@x.com:\n    grants:\n      - role: careful\n        scope: staging/*\n  r@x.com:\n    grants:\n      - role: consoler\n        scope: staging/*\n  u@x.com:\n    grants:\n      - role: runner\n        scope: staging/*\n",
        ),
    ])
}

#[test]
fn pids_must_be_pod_names() {
    for ok in ["web-abc12", "a", "0", "worker-1-2"] {
        assert_eq!(check_pid(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "web,release=R1",
        "Web-abc12",
        "-web",
        "web-",
        "a.b",
        "a b",
        "a_b",
        "web!",
        "..",
    ] {
        let e = check_pid(bad).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
    let services = vec!["web".to_string(), "build".to_string()];
    assert_eq!(check_not_service("web-abc12", &services), Ok(()));
    let e = check_not_service("build", &services).unwrap_err();
    assert!(e.contains("is a service name"), "{e}");
    for op in [
        "exec",
        "ps stop",
        "files download",
        "files upload",
        "files delete",
    ] {
        assert!(targets_pod(op), "{op}");
    }
    assert!(!targets_pod("ps info") && !targets_pod("run"));
}

#[test]
fn file_values_never_start_with_a_dash() {
    let dl = |q: &str| check_file_values("files download", Some(q));
    assert_eq!(dl("file=/app/log/x.log"), Ok(()));
    assert_eq!(dl("file=a-b&other=-x"), Ok(()));
    assert_eq!(dl("file=+-x"), Ok(()), "a leading space is a file name");
    for bad in ["file=-rf", "file=%2Dx", "x=1&file=--to-command=sh"] {
        let e = dl(bad).unwrap_err();
        assert!(e.contains("starts with \"-\""), "{bad}: {e}");
    }
    let rm = |q: &str| check_file_values("files delete", Some(q));
    assert_eq!(rm("files=/tmp/a,/tmp/b"), Ok(()));
    assert!(rm("files=/tmp/a,-rf").is_err());
    assert!(rm("files=-rf").is_err());
    // Only the parameter each route reads is checked.
    assert_eq!(rm("file=-x"), Ok(()));
    assert_eq!(check_file_values("files upload", Some("file=-x")), Ok(()));
    assert_eq!(check_file_values("files download", None), Ok(()));
}

#[test]
fn app_system_needs_a_literal_grant() {
    let p = process_policy();
    let facts = |app| op("staging", Some(app), "apps info");
    let r = denied(p.decide(user(&p, "a@x.com"), &facts("system")));
    assert_eq!(
        r,
        "denied: a@x.com may not \"apps info\" on staging/system: app \"system\" is the rack itself (its API pods), covered only by a grant naming system literally"
    );
    denied(p.decide(user(&p, "g@x.com"), &facts("system")));
    allowed(p.decide(user(&p, "s@x.com"), &facts("system")));
    // Controls: other apps and rack-level operations are unchanged.
    allowed(p.decide(user(&p, "a@x.com"), &facts("myapp")));
    allowed(p.decide(user(&p, "g@x.com"), &facts("sysadmin")));
    allowed(p.decide(user(&p, "a@x.com"), &op("staging", None, "rack")));
    let web = process("api", "rack");
    let mut f = exec("staging", "ls", &web);
    f.app = Some("system");
    denied(p.decide(user(&p, "a@x.com"), &f));
    allowed(p.decide(user(&p, "s@x.com"), &f));
}

#[test]
fn exec_into_a_placeholder_is_run_only_for_its_creator() {
    let p = process_policy();
    let d = user(&p, "d@x.com");
    let tagged = format!("sleep 3600.{}", "7".repeat(TAG_DIGITS));
    for command in ["sleep 3600", tagged.as_str()] {
        let placeholder = process("command", command);
        let f = exec("staging", "rake db:migrate", &placeholder);
        allowed(p.decide_for(d, &f, Owner::Caller));
        let r = denied(p.decide_for(d, &f, Owner::Other));
        assert!(
            r.contains("may not \"exec\"")
                && r.contains("placeholder not created by this identity"),
            "{r}"
        );
        // exec permission reaches anyone's placeholder.
        allowed(p.decide_for(user(&p, "a@x.com"), &f, Owner::Other));
    }
    // Not a placeholder: ownership plays no part.
    let web = process("web", "bin/web");
    let r = denied(p.decide_for(d, &exec("staging", "ls", &web), Owner::Caller));
    assert!(!r.contains("placeholder"), "{r}");
}

#[test]
fn exec_entrypoint_needs_any_command_or_the_callers_placeholder() {
    use super::process::entrypoint_set;
    assert!(entrypoint_set(Some(b"true")) && entrypoint_set(Some(b"1")));
    assert!(!entrypoint_set(Some(b"false")) && !entrypoint_set(None));
    let p = process_policy();
    let web = process("web", "bin/web");
    let f = exec("staging", "rails console", &web);
    // One allowed command on web: the entrypoint's words were not checked.
    let r = p
        .check_exec_entrypoint(user(&p, "r@x.com"), &f, Owner::Other)
        .unwrap_err();
    assert!(r.contains("Entrypoint header"), "{r}");
    // `**` on web, or not on web: decided as exec of anything there.
    assert_eq!(
        p.check_exec_entrypoint(user(&p, "f@x.com"), &f, Owner::Other),
        Ok(())
    );
    assert!(p
        .check_exec_entrypoint(user(&p, "c@x.com"), &f, Owner::Other)
        .is_err());
    // The attached run's own placeholder takes the run's entrypoint.
    let placeholder = process("command", "sleep 3600");
    let f = exec("staging", "rake db:migrate", &placeholder);
    let d = user(&p, "d@x.com");
    assert_eq!(p.check_exec_entrypoint(d, &f, Owner::Caller), Ok(()));
    assert!(p.check_exec_entrypoint(d, &f, Owner::Other).is_err());
}

#[test]
fn stopping_a_placeholder_with_run_needs_its_creator() {
    let p = process_policy();
    let stop = |who: &str, proc_: &Process, owner| {
        let f = Facts {
            process: Some(proc_),
            ..op("staging", Some("myapp"), "ps stop")
        };
        p.decide_for(user(&p, who), &f, owner)
    };
    let tagged = format!("sleep 3600.{}", "7".repeat(TAG_DIGITS));
    for command in ["sleep 3600", tagged.as_str()] {
        let placeholder = process("command", command);
        allowed(stop("d@x.com", &placeholder, Owner::Caller));
        let r = denied(stop("d@x.com", &placeholder, Owner::Other));
        assert!(
            r.contains("placeholder not created by this identity"),
            "{r}"
        );
        // ps stop reaches any process.
        allowed(stop("o@x.com", &placeholder, Owner::Other));
    }
}

#[test]
fn run_commands_imitating_the_tag_are_refused() {
    let p = process_policy();
    let a = user(&p, "a@x.com");
    let fake = format!("sleep 3600.{}", "1".repeat(TAG_DIGITS));
    let r = denied(p.decide(a, &run("staging", "command", &fake)));
    assert!(
        r.contains("imitates the gateway's run placeholder tag"),
        "{r}"
    );
    // Controls: ordinary fractions and exec are not affected.
    allowed(p.decide(a, &run("staging", "command", "sleep 1.5")));
    allowed(p.decide(a, &run("staging", "command", "sleep 3600")));
    let web = process("web", "bin/web");
    allowed(p.decide_for(a, &exec("staging", &fake, &web), Owner::Other));
}

#[test]
fn files_are_exec_class() {
    let p = process_policy();
    let files = |who: &str, op_name: &'static str, proc_: Option<&Process>, owner| {
        let f = Facts {
            process: proc_,
            ..op("staging", Some("myapp"), op_name)
        };
        p.decide_for(user(&p, who), &f, owner)
    };
    let web = process("web", "bin/web");
    for op_name in ["files download", "files upload", "files delete"] {
        assert_eq!(
            files("a@x.com", op_name, None, Owner::Other),
            Verdict::NeedProcess
        );
        let r = allowed(files("a@x.com", op_name, Some(&web), Owner::Other));
        assert!(r.contains("exec of any command on service web"), "{r}");
        allowed(files("f@x.com", op_name, Some(&web), Owner::Other));
        // Deny rules on the service: not every command is allowed there.
        let r = denied(files("c@x.com", op_name, Some(&web), Owner::Other));
        assert!(r.contains("forbids \"rm **\" on service web"), "{r}");
        // Without the files operation: refused before any look-up.
        denied(files("o@x.com", op_name, None, Owner::Other));
    }
    // exec of one command is not exec of any command.
    let r = denied(files("r@x.com", "files download", Some(&web), Owner::Other));
    assert!(r.contains("files in a process are exec-class"), "{r}");
    // exec on web does not reach a worker.
    denied(files(
        "f@x.com",
        "files download",
        Some(&process("worker", "bin/worker")),
        Owner::Other,
    ));
    // run of any command covers the caller's own placeholder only.
    let placeholder = process("command", "sleep 3600");
    allowed(files(
        "u@x.com",
        "files download",
        Some(&placeholder),
        Owner::Caller,
    ));
    denied(files(
        "u@x.com",
        "files download",
        Some(&placeholder),
        Owner::Other,
    ));
    denied(files(
        "u@x.com",
        "files download",
        Some(&web),
        Owner::Caller,
    ));
}

// ---------------------------------------------------------------------------
// Load errors the engine relies on

#[test]
fn operation_and_command_patterns_are_validated() {
    let errs = load_errors(&[(
        "roles/x.yaml",
        "allow:\n  - apps\n  - deploy everything\ncommands:\n  allow:\n    web:\n      - a ** b\nrun_headers: [Image, X-Evil]\n",
    )]);
    let text = ConfigErrors(errs).to_string();
    assert!(
        text.contains("t:roles/x.yaml:3:5: allow: `deploy everything` matches no operation"),
        "{text}"
    );
    assert!(
        text.contains(
            "t:roles/x.yaml:7:9: command pattern `a ** b`: `**` may only be the last word"
        ),
        "{text}"
    );
    assert!(
        text.contains("t:roles/x.yaml:8:22: run_headers: `X-Evil` is not a restricted run header"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// Properties over random policies

mod properties {
    use proptest::prelude::*;

    use super::super::*;

    const RACKS: [&str; 2] = ["a", "b"];
    const APPS: [&str; 3] = ["x", "y", "*"];
    /// Operations with extra rules, drawn more often than the uniform
    /// choice over ~100 operations would.
    const INTERESTING: [&str; 9] = [
        "run",
        "exec",
        "ps stop",
        "rack",
        "login",
        "apps",
        "instances ssh",
        "rack update",
        "apps delete",
    ];
    const COMMAND_RULES: [(&str, &str); 4] = [
        ("command", "rake db:migrate"),
        ("*", "**"),
        ("web", "sleep *"),
        ("command", "rails *"),
    ];

    fn at() -> RuleRef {
        RuleRef {
            file: Arc::from("gen.yaml"),
            line: 1,
        }
    }

    fn opset(p: f64) -> impl Strategy<Value = OpSet> {
        prop::collection::vec(prop::bool::weighted(p), operations().len()).prop_map(|bits| {
            let mut s = OpSet::default();
            for (i, b) in bits.into_iter().enumerate() {
                if b {
                    s.insert(i);
                }
            }
            s
        })
    }

    fn rules(picks: &[bool]) -> Vec<CommandRule> {
        COMMAND_RULES
            .iter()
            .zip(picks)
            .filter(|(_, on)| **on)
            .map(|((service, pattern), _)| CommandRule {
                service: Glob::new(service),
                pattern: CommandPattern::parse(pattern).unwrap(),
                at: at(),
            })
            .collect()
    }

    fn role() -> impl Strategy<Value = Role> {
        (
            opset(0.4),
            opset(0.04),
            prop::collection::vec(any::<bool>(), COMMAND_RULES.len()),
            prop::collection::vec(prop::bool::weighted(0.15), COMMAND_RULES.len()),
            any::<bool>(),
        )
            .prop_map(|(allow, deny, allow_cmds, deny_cmds, image)| {
                let n = operations().len();
                Role {
                    name: "gen".into(),
                    file: Arc::from("roles/gen.yaml"),
                    description: String::new(),
                    allow,
                    allow_at: vec![Some(at()); n],
                    deny,
                    deny_at: vec![Some(at()); n],
                    commands_allow: rules(&allow_cmds),
                    commands_deny: rules(&deny_cmds),
                    run_headers: if image {
                        vec![("image".into(), at())]
                    } else {
                        Vec::new()
                    },
                    permissions: Vec::new(),
                    env_keys: None,
                    require: None,
                    inherits: Vec::new(),
                }
            })
    }

    fn grant(roles: usize) -> impl Strategy<Value = Grant> {
        (
            0..roles,
            prop::sample::select(RACKS.to_vec()),
            prop::sample::select(APPS.to_vec()),
        )
            .prop_map(|(role, rack, app)| Grant {
                role,
                rack: Glob::new(rack),
                app: Glob::new(app),
                at: at(),
                expires: None,
                reason: None,
                require: None,
            })
    }

    /// One request, in the gateway's terms.
    #[derive(Debug, Clone)]
    struct Req {
        rack: &'static str,
        app: Option<&'static str>,
        op: &'static str,
        service: &'static str,
        command: &'static str,
        process: Process,
        image: bool,
    }

    fn req() -> impl Strategy<Value = Req> {
        (
            prop::sample::select(RACKS.to_vec()),
            prop::option::of(prop::sample::select(vec!["x", "y"])),
            prop_oneof![
                prop::sample::select(operations()),
                prop::sample::select(INTERESTING.to_vec()),
            ],
            prop::sample::select(vec!["command", "web", "build"]),
            prop::sample::select(vec![
                "sleep 3600",
                "rake db:migrate",
                "rails console",
                "rake 'x",
            ]),
            prop::sample::select(vec!["command", "web"]),
            prop::sample::select(vec!["sleep 3600", "bin/web"]),
            prop::bool::weighted(0.2),
        )
            .prop_map(
                |(rack, app, op, service, command, p_service, p_command, image)| Req {
                    rack,
                    // Routes of run, exec and ps stop always name an app.
                    app: if matches!(op, "run" | "exec" | "ps stop") {
                        app.or(Some("x"))
                    } else {
                        app
                    },
                    op,
                    service,
                    command,
                    process: Process {
                        service: p_service.into(),
                        command: p_command.into(),
                    },
                    image,
                },
            )
    }

    #[derive(Debug, Clone)]
    struct World {
        policy: Policy,
        subject: Subject,
    }

    fn world() -> impl Strategy<Value = World> {
        prop::collection::vec(role(), 1..=4)
            .prop_flat_map(|roles| {
                let n = roles.len();
                (
                    Just(roles),
                    prop::collection::vec(grant(n), 0..=5),
                    opset(0.04),
                    opset(0.1),
                    any::<bool>(),
                    prop::collection::vec((0..n, opset(0.3)), 0..=2),
                )
            })
            .prop_map(
                |(roles, grants, user_deny, blocked, defaults, exceptions)| {
                    let n = operations().len();
                    // Half the worlds also block the built-in list, so the
                    // interesting operations meet blocks and exceptions often.
                    let blocked = if defaults {
                        super::super::load::DEFAULT_BLOCKED
                            .iter()
                            .fold(blocked, |b, op| b.union(ops_matching(op)))
                    } else {
                        blocked
                    };
                    World {
                        policy: Policy {
                            roles,
                            blocked,
                            exceptions: exceptions
                                .into_iter()
                                .map(|(role, ops)| Exception {
                                    role,
                                    ops,
                                    at: at(),
                                })
                                .collect(),
                            ..Policy::default()
                        },
                        subject: Subject {
                            kind: SubjectKind::User,
                            name: "u@x.com".into(),
                            grants,
                            deny: user_deny,
                            deny_at: vec![Some(at()); n],
                            valid_after: None,
                            expires: None,
                            reason: None,
                            at: at(),
                        },
                    }
                },
            )
    }

    /// Decides like the gateway: ask again with the process when the engine
    /// needs it.
    fn decide(w: &World, subject: &Subject, r: &Req) -> Verdict {
        let headers: &[&str] = if r.image && r.op == "run" {
            &["image"]
        } else {
            &[]
        };
        let mut f = Facts {
            rack: r.rack,
            operation: r.op,
            app: r.app,
            service: (r.op == "run").then_some(r.service),
            command: matches!(r.op, "run" | "exec").then_some(r.command),
            command_shown: None,
            process: None,
            run_headers: headers,
            now: None,
            auth: None,
        };
        match w.policy.decide(subject, &f) {
            Verdict::NeedProcess => {
                f.process = Some(&r.process);
                let v = w.policy.decide(subject, &f);
                assert_ne!(v, Verdict::NeedProcess, "asked twice for the process");
                v
            }
            v => v,
        }
    }

    /// Whether a grant's scope covers the request for `op`, restated from
    /// the documented rules: rack and app must match; a request naming no
    /// app is covered by app-wide grants, and by app-scoped ones only for
    /// the CLI's `rack` probe and `login`.
    fn covers(g: &Grant, r: &Req, op: &str) -> bool {
        let rack = g.rack.as_str() == "*" || g.rack.as_str() == r.rack;
        let app = match r.app {
            Some(a) => g.app.as_str() == "*" || g.app.as_str() == a,
            None => g.app.as_str() == "*" || matches!(op, "rack" | "login" | "probe"),
        };
        rack && app
    }

    /// Operation-level deny: blocked without an applicable exception, the
    /// user's deny, or a covering grant's role deny.
    fn denied_at_op_level(w: &World, s: &Subject, r: &Req, op: &str) -> bool {
        let i = op_index(op).unwrap();
        let covering: Vec<&Grant> = s.grants.iter().filter(|g| covers(g, r, op)).collect();
        let excepted = covering.iter().any(|g| {
            w.policy.roles[g.role].allow.contains(i)
                && w.policy
                    .exceptions
                    .iter()
                    .any(|e| e.role == g.role && e.ops.contains(i))
        });
        (w.policy.blocked.contains(i) && !excepted)
            || s.deny.contains(i)
            || covering
                .iter()
                .any(|g| w.policy.roles[g.role].deny.contains(i))
    }

    fn allowed_by_a_covering_role(w: &World, s: &Subject, r: &Req, op: &str) -> bool {
        let i = op_index(op).unwrap();
        s.grants
            .iter()
            .any(|g| covers(g, r, op) && w.policy.roles[g.role].allow.contains(i))
    }

    /// The operations that can authorise the request: exec into, and stop
    /// of, an attached run's `sleep N` placeholder are also authorised by
    /// `run`.
    fn authorising(r: &Req) -> Vec<&'static str> {
        let placeholder = r.process.command == "sleep 3600";
        match r.op {
            "exec" if placeholder => vec!["exec", "run"],
            "ps stop" if placeholder => vec!["ps stop", "run"],
            op => vec![op],
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// (a) Deny wins: a deny at any level for every operation that
        /// could authorise the request means Deny.
        #[test]
        fn deny_always_wins(w in world(), r in req()) {
            let v = decide(&w, &w.subject, &r);
            if authorising(&r).iter().all(|op| denied_at_op_level(&w, &w.subject, &r, op)) {
                prop_assert!(matches!(v, Verdict::Deny(_)), "{:?}", v);
            }
        }

        /// (b) A grant whose scope does not cover the request changes
        /// nothing, not even the reason.
        #[test]
        fn grants_elsewhere_change_nothing(
            w in world(),
            r in req(),
            extra in grant(4),
            other_app in any::<bool>(),
            pos in any::<prop::sample::Index>(),
        ) {
            let mut extra = extra;
            extra.role %= w.policy.roles.len();
            match r.app {
                Some(app) if other_app => {
                    extra.rack = Glob::new(r.rack);
                    extra.app = Glob::new(if app == "x" { "y" } else { "x" });
                }
                _ => extra.rack = Glob::new(if r.rack == "a" { "b" } else { "a" }),
            }
            let before = decide(&w, &w.subject, &r);
            let mut more = w.subject.clone();
            let at = pos.index(more.grants.len() + 1);
            more.grants.insert(at, extra);
            prop_assert_eq!(decide(&w, &more, &r), before);
        }

        /// (c) Allow needs a covering grant whose role allows an
        /// authorising operation that nothing denies.
        #[test]
        fn allow_needs_a_covering_allow(w in world(), r in req()) {
            if let Verdict::Allow(reason) = decide(&w, &w.subject, &r) {
                prop_assert!(
                    authorising(&r).iter().any(|op| {
                        allowed_by_a_covering_role(&w, &w.subject, &r, op)
                            && !denied_at_op_level(&w, &w.subject, &r, op)
                    }),
                    "allowed without a covering allow: {}",
                    reason
                );
                prop_assert!(!(r.op == "run" && r.service == "build"));
            }
        }

        /// For operations without commands or processes the verdict is
        /// exactly: some covering role allows it and nothing denies it.
        #[test]
        fn plain_operations_follow_the_model(w in world(), r in req()) {
            // File transfers also need exec into the process (rule 11).
            prop_assume!(!matches!(
                r.op,
                "run" | "exec" | "ps stop" | "files download" | "files upload" | "files delete"
            ));
            let v = decide(&w, &w.subject, &r);
            let expect = allowed_by_a_covering_role(&w, &w.subject, &r, r.op)
                && !denied_at_op_level(&w, &w.subject, &r, r.op);
            prop_assert_eq!(v.is_allow(), expect, "{:?}", v);
        }
    }
}
