//! Access review through the real binary: `diff` over the fixture pairs in
//! `tests/fixtures/diff/` (OLD is `base`, NEW each sibling; the step-up
//! cases also compare `step-up-added` with `step-up-changed`), `diff --repo`
//! and the CI example's exact commands over real Git repositories in a
//! temp dir, and `who-can`.

use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Repository, Signature};

use crate::support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diff")
        .join(name)
}

/// `diff` of the fixtures `old` and `new` in `format`.
async fn diff_pair(old: &str, new: &str, format: &str) -> (Option<i32>, String, String) {
    let (old, new) = (fixture(old), fixture(new));
    run(
        &[
            "diff",
            "--format",
            format,
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn unchanged_config_and_renamed_role_report_no_change() {
    for case in ["base", "renamed-role"] {
        let (code, out, err) = diff_pair("base", case, "text").await;
        assert_eq!(code, Some(0), "{case}: {out}{err}");
        assert_eq!(out, "no change to anyone's access\n", "{case}");
    }
}

#[tokio::test]
async fn role_edit_shows_under_every_holder() {
    let (code, out, err) = diff_pair("base", "role-edit", "json").await;
    assert_eq!(code, Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"], "3 identities gain access (2 risky)");
    let names: Vec<&str> = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for who in ["alice@example.com", "bob@example.com", "deploy-bot"] {
        assert!(names.contains(&who), "{who} missing: {out}");
    }
    // Carol holds only reader: the runner edit does not touch her.
    assert!(!names.contains(&"carol@example.com"), "{out}");
    assert!(out.contains("\"access\": \"operation `logs`\""), "{out}");
    assert!(out.contains("roles/runner.yaml:5"), "{out}");
}

#[tokio::test]
async fn each_fixture_pair_reports_its_change() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("inheritance-change", "3 identities lose access", &["- operation `ps` on staging/billing", "was: allowed: runner (roles/reader.yaml:5)"]),
        ("command-added", "3 identities gain access", &["+ run `rails console` on service command on staging/billing [exec/run]"]),
        ("command-removed", "gain access, 3 lose", &["- run `rake db:migrate` on service command", "+ run `rake db:seed` on service command"]),
        ("scope-widened", "1 identity gains access", &["user bob@example.com (changed)", "+ operation `ps` on staging/(any other app) [* scope]"]),
        ("blocked-shrunk", "1 gateway-wide rule changed", &["removed blocked: `instances ssh` is no longer blocked for everyone [blocked list shrinks]", "+ operation `instances ssh` on production/billing [admin, production]"]),
        ("identity-added-removed", "1 identity gains access, 1 loses", &["user dave@example.com (added)", "user carol@example.com (removed)", "+ run `rake db:migrate` on service command on production/api [exec/run, production]"]),
    ];
    let mut problems = Vec::new();
    for (case, summary, lines) in cases {
        let (code, out, err) = diff_pair("base", case, "text").await;
        let first = out.lines().next().unwrap_or_default();
        let missing: Vec<&&str> = lines.iter().filter(|l| !out.contains(**l)).collect();
        if code != Some(1) || !first.contains(summary) || !missing.is_empty() {
            problems.push(format!(
                "{case}: exit {code:?}, missing {missing:?} / `{summary}`:\n{out}{err}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn risky_changes_come_first_in_markdown() {
    let (code, out, _) = diff_pair("base", "blocked-shrunk", "markdown").await;
    assert_eq!(code, Some(1));
    assert!(out.starts_with("**Access review**"), "{out}");
    let global = out.find("#### Gateway-wide rules").unwrap();
    let first_identity = out.find("#### user").unwrap();
    assert!(global < first_identity, "{out}");
    // Carol's production-wide gain outranks bob's single-app one.
    assert!(
        out.find("`carol@example.com`").unwrap() < out.find("`bob@example.com`").unwrap(),
        "{out}"
    );
}

#[tokio::test]
async fn invalid_new_prints_its_problems_and_exits_2() {
    let (code, out, err) = diff_pair("base", "invalid-new", "text").await;
    assert_eq!(code, Some(2), "{out}{err}");
    let want = format!(
        "{}:6:9: undefined role `deployer`",
        fixture("invalid-new").join("users.yaml").display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("NEW"), "{err}");
    assert!(out.is_empty(), "{out}");
}

/// Writes `dir`'s files into the work tree of `repo` (replacing all
/// tracked config) and commits them.
fn commit_dir(repo: &Repository, from: &Path, message: &str) -> git2::Oid {
    let work = repo.workdir().unwrap().to_path_buf();
    for sub in ["roles", "tests"] {
        let _ = std::fs::remove_dir_all(work.join(sub));
    }
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let to = work.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, to).unwrap();
    }
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("t", "t@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A repository whose `main` holds `base` and whose HEAD (branch `pr`)
/// adds one commit holding `case`.
fn fixture_repo(case: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let base = commit_dir(&repo, &fixture("base"), "base");
    repo.branch("main", &repo.find_commit(base).unwrap(), true)
        .unwrap();
    commit_dir(&repo, &fixture(case), case);
    dir
}

#[tokio::test]
async fn diff_reads_revisions_and_merge_base_ranges() {
    let dir = fixture_repo("command-added");
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = run(&["diff", "--repo", d, "main", "HEAD"], &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("+ run `rails console`"), "{out}");
    let (code, ranged, _) = run(&["diff", "--repo", d, "main...HEAD"], &[]).await;
    assert_eq!((code, &ranged), (Some(1), &out));
    let (code, same, _) = run(&["diff", "--repo", d, "main", "main"], &[]).await;
    assert_eq!(code, Some(0), "{same}");
    let (code, _, err) = run(&["diff", "--repo", d, "main", "no-such-branch"], &[]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("revision `no-such-branch`"), "{err}");
}

#[tokio::test]
async fn invalid_revision_prints_problems_at_rev_file_line() {
    let dir = fixture_repo("invalid-new");
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = run(&["diff", "--repo", d, "main...HEAD"], &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("HEAD:users.yaml:6:9: undefined role `deployer`"),
        "{err}"
    );
}

/// Runs the CI examples' script in a checkout, as the workflows do.
async fn ci_script(work: &Path) -> (Option<i32>, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/access-review.sh");
    let bin_dir = bin().parent().unwrap().to_path_buf();
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    let out = tokio::process::Command::new("sh")
        .arg(script)
        .arg("main")
        .current_dir(work)
        .env_clear()
        .env("PATH", path)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let report = std::fs::read_to_string(work.join("access-review.md")).unwrap_or_default();
    (
        out.status.code(),
        format!(
            "{}{}{report}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_ci_examples_commands_check_and_write_the_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for wf in [
        "examples/github-actions-access-review.yml",
        "examples/gitlab-ci-access-review.yml",
    ] {
        let text = std::fs::read_to_string(root.join(wf)).unwrap();
        assert!(text.contains("sh .ci/access-review.sh \"origin/"), "{wf}");
    }
    let good = fixture_repo("scope-widened");
    let (code, out) = ci_script(good.path()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("**Access review**"), "{out}");
    assert!(out.contains("1 identity gains access"), "{out}");
    let bad = fixture_repo("invalid-new");
    let (code, out) = ci_script(bad.path()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("::error file=users.yaml,line=6,col=9::undefined role `deployer`"),
        "{out}"
    );
}

#[tokio::test]
async fn who_can_lists_identities_with_their_grant() {
    let dir = fixture("base");
    let d = dir.to_str().unwrap();
    let (code, out, err) = run(
        &[
            "who-can",
            "run",
            "--rack",
            "staging",
            "--app",
            "billing",
            "--service",
            "command",
            "--command",
            "rake db:migrate",
            "--config",
            d,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("user alice@example.com: runner on staging/* (users.yaml:4)")
            || out.contains("user alice@example.com: runner on staging/* ("),
        "{out}"
    );
    assert!(
        out.contains("user bob@example.com: runner on staging/billing"),
        "{out}"
    );
    assert!(out.contains("ci deploy-bot: runner on staging/*"), "{out}");
    assert!(!out.contains("carol"), "{out}");
    // Control: a command nobody may run.
    let (code, out, _) = run(
        &[
            "who-can",
            "run",
            "--rack",
            "staging",
            "--app",
            "billing",
            "--service",
            "command",
            "--command",
            "rm -rf /",
            "--config",
            d,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(out, "nobody may \"run\" on staging/billing\n");
}

/// `can --list` applies a role's deny from another grant, like the engine.
#[tokio::test]
async fn can_list_applies_denies_from_other_grants() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("base");
    for f in ["gateway.yaml", "roles/reader.yaml"] {
        std::fs::create_dir_all(dir.path().join("roles")).unwrap();
        std::fs::copy(base.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("roles/no-ps.yaml"),
        "description: never ps\ndeny:\n  - ps\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("users.yaml"),
        "users:\n  alice@example.com:\n    grants:\n      - role: reader\n        scope: staging/*\n      - role: no-ps\n        scope: staging/billing\n      - role: reader\n        scope: production/api\n      - role: no-ps\n        scope: production/*\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = run(&["can", "alice@example.com", "--list", "--config", d], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let after = |scope: &str| {
        let i = lines
            .iter()
            .position(|l| l.contains(&format!("{scope} as reader")))
            .unwrap();
        lines[i + 1].to_string()
    };
    // Covered by the deny's scope: gone. Partly covered: an exception.
    let has_ps = |line: String| line.split([':', ',']).any(|w| w.trim() == "ps");
    assert!(!has_ps(after("production/api")), "{out}");
    assert!(has_ps(after("staging/*")), "{out}");
    assert!(
        out.contains("but not on staging/billing: ps (denied by no-ps, "),
        "{out}"
    );
    // The engine agrees: denied on billing, allowed elsewhere (control).
    let ask = |app: &'static str, rack: &'static str| {
        let d = d.to_string();
        async move {
            run(
                &[
                    "can",
                    "alice@example.com",
                    "ps",
                    "--rack",
                    rack,
                    "--app",
                    app,
                    "--config",
                    &d,
                ],
                &[],
            )
            .await
            .0
        }
    };
    assert_eq!(ask("billing", "staging").await, Some(1));
    assert_eq!(ask("api", "production").await, Some(1));
    assert_eq!(ask("web", "staging").await, Some(0));
}

/// The shipped example config in a temp dir, as an operator copies it.
fn example_config() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("gateway.yaml.example", "gateway.yaml"),
        ("users.yaml.example", "users.yaml"),
        ("ci.yaml.example", "ci.yaml"),
    ] {
        std::fs::copy(root.join(from), dir.path().join(to)).unwrap();
    }
    copy_roles(dir.path());
    dir
}

/// `can --explain` on the example config: the answer, then the trace
/// (entry, grants and their coverage, roles and inherited roles, command
/// rules, the deciding rule); exit codes as `can`.
#[tokio::test]
async fn can_explain_traces_an_allow_and_a_deny_on_the_example_config() {
    let dir = example_config();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = run(
        &[
            "can",
            "alice@example.com",
            "run",
            "--rack",
            "staging",
            "--app",
            "myapp",
            "--service",
            "command",
            "--command",
            "rake db:migrate",
            "--explain",
            "--config",
            d,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("allow: allowed: deployer (roles/deployer.yaml:"),
        "{out}"
    );
    assert_eq!(lines[1], "why:", "{out}");
    for want in [
        "  identity alice@example.com (users.yaml:6): no expiry",
        "    grant deployer on staging/* (users.yaml:8): covers staging/myapp",
        "    grant viewer on production/* (users.yaml:10): does not cover staging/myapp: rack staging is outside production",
        "    operation \"run\":",
        "        inherits viewer (roles/viewer.yaml): neither allows nor denies \"run\"",
        "      command rules on service command:",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{out}");
    }
    assert!(
        out.contains(
            "      role deployer (roles/deployer.yaml): allows \"run\" (roles/deployer.yaml:"
        ),
        "{out}"
    );
    assert!(
        out.contains("        deployer allows \"rake db:migrate\" (roles/deployer.yaml:"),
        "{out}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("  decided: allow by deployer (roles/deployer.yaml:")
            && last.ends_with("allowing \"rake db:migrate\""),
        "{out}"
    );

    // The deny: bob's ops grant on production/billing does not allow a
    // promote, and his viewer grant is elsewhere.
    let (code, out, err) = run(
        &[
            "can",
            "bob@example.com",
            "releases promote",
            "--rack",
            "production",
            "--app",
            "billing",
            "--explain",
            "--config",
            d,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "deny: denied: bob@example.com may not \"releases promote\" on production/billing (granted there: ops users.yaml:14)",
        "{out}"
    );
    for want in [
        "  identity bob@example.com (users.yaml:13): no expiry",
        "    grant ops on production/billing (users.yaml:14): covers production/billing",
        "    grant viewer on staging/* (users.yaml:16): does not cover production/billing: rack production is outside staging",
        "      role ops (roles/ops.yaml): neither allows nor denies \"releases promote\"",
        "        inherits viewer (roles/viewer.yaml): neither allows nor denies \"releases promote\"",
        "  decided: deny by default deny: no role granted on production/billing allows \"releases promote\"",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{out}");
    }
    assert_eq!(lines.last(), Some(&"  decided: deny by default deny: no role granted on production/billing allows \"releases promote\""));

    // An error exits 2, explained or not.
    let (code, _, err) = run(
        &[
            "can",
            "nobody@example.com",
            "ps",
            "--rack",
            "staging",
            "--explain",
            "--config",
            d,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
}

/// A grant or identity gaining, changing or losing an expiry still
/// decides the same today, yet shows (not risky unless it no longer
/// expires), and counts as changed.
#[tokio::test]
async fn expiries_added_changed_and_removed_show_per_identity() {
    let (code, out, err) = diff_pair("base", "expiry-added", "text").await;
    assert_eq!(code, Some(1), "{out}{err}");
    for want in [
        "expiry or step-up changes for 3 identities",
        "user alice@example.com (changed):\n  ~ expiry of grant runner on staging/* added: (none) → 2099-01-01T00:00:00Z (users.yaml:4)\n",
        "user bob@example.com (changed):\n  ~ expiry of the identity added: (none) → 2098-06-30T00:00:00Z (users.yaml:11)\n",
        "ci deploy-bot (changed):\n  ~ expiry of the identity changed: 2099-01-01T00:00:00Z → 2099-06-30T00:00:00Z (ci.yaml:3)\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains('['), "a new expiry is not risky: {out}");
    assert!(!out.contains("carol"), "{out}");

    let (code, out, _) = diff_pair("expiry-added", "base", "json").await;
    assert_eq!(code, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let alice = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "alice@example.com")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(alice["changes"], serde_json::json!([]), "{out}");
    assert_eq!(
        alice["conditions"],
        serde_json::json!([{"change": "removed", "kind": "expiry", "grant": "runner on staging/*",
            "old": "2099-01-01T00:00:00Z", "new": null, "rule": "users.yaml:4",
            "risks": ["no longer expires"]}]),
        "{out}"
    );

    let (code, out, _) = diff_pair("base", "expiry-added", "markdown").await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("| ✏️ added | expiry of grant runner on staging/* | (none) → 2099-01-01T00:00:00Z | users.yaml:4 |  |"),
        "{out}"
    );

    // Control: the same expiries on both sides are no change.
    let (code, out, err) = diff_pair("expiry-added", "expiry-added", "text").await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, "no change to anyone's access\n");
}

/// A step-up requirement added to a grant or a role shows under every
/// identity it applies to; relaxing one is risky. People are evaluated
/// as having logged in with MFA just now, so a new requirement is not a
/// loss for them; a CI identity never meets a login requirement and
/// loses the access.
#[tokio::test]
async fn step_up_added_relaxed_and_changed_show_per_identity() {
    let (code, out, err) = diff_pair("base", "step-up-added", "text").await;
    assert_eq!(code, Some(1), "{out}{err}");
    for want in [
        "1 identity loses access, expiry or step-up changes for 4 identities",
        "user carol@example.com (changed):\n  ~ step-up of grant reader on production/* added: (none) → mfa, max_auth_age 12h (users.yaml:16)\n",
        "user alice@example.com (changed):\n  ~ step-up of grant runner on staging/* added: (none) → max_auth_age 1d (roles/runner.yaml:3)\n",
        "user bob@example.com (changed):\n  ~ step-up of grant runner on staging/billing added: (none) → max_auth_age 1d (roles/runner.yaml:3)\n",
        "  - operation `ps` on staging/billing, (any other app) [* scope]\n      was: allowed: runner (roles/reader.yaml:5) on staging/*\n",
        "  ~ step-up of grant runner on staging/* added: (none) → max_auth_age 1d (roles/runner.yaml:3)\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("step-up relaxed"), "{out}");

    // The reverse: every requirement removed is a risky relaxation.
    let (code, out, _) = diff_pair("step-up-added", "base", "markdown").await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("| ✏️ removed | step-up of grant reader on production/* | mfa, max_auth_age 12h → (none) | users.yaml:16 | ⚠️ step-up relaxed |"),
        "{out}"
    );
    assert_eq!(out.matches("⚠️ step-up relaxed").count(), 4, "{out}");

    // A longer max_auth_age is relaxed; adding mfa is not.
    let (code, out, _) = diff_pair("step-up-added", "step-up-changed", "json").await;
    assert_eq!(code, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let of = |name: &str| {
        v["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .map(|i| i["conditions"].clone())
            .unwrap_or_else(|| panic!("{name}: {out}"))
    };
    assert_eq!(
        of("carol@example.com"),
        serde_json::json!([{"change": "changed", "kind": "step_up", "grant": "reader on production/*",
            "old": "mfa, max_auth_age 12h", "new": "mfa, max_auth_age 1d", "rule": "users.yaml:16",
            "risks": ["step-up relaxed"]}])
    );
    assert_eq!(of("alice@example.com")[0]["risks"], serde_json::json!([]));
    assert_eq!(of("alice@example.com")[0]["new"], "mfa, max_auth_age 1d");

    // Control: unchanged requirements are no change.
    let (code, out, _) = diff_pair("step-up-added", "step-up-added", "text").await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, "no change to anyone's access\n");
}
