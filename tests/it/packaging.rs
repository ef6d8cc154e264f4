//! What can be checked about the shipped artifacts without a registry or a
//! container runtime: the Dockerfile's `COPY` sources exist and survive
//! `.dockerignore`, it runs as a non-root user, its entrypoint and command
//! are real commands of the binary's CLI; the Debian package's metadata
//! names files that exist (or that scripts/deb.sh generates) and its
//! maintainer scripts are valid shell that never start the service.
//! Building and installing the `.deb` itself is `scripts/deb.sh --check`.

use std::path::{Path, PathBuf};

use crate::support::{read, run};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One Dockerfile instruction: keyword (upper-cased) and its arguments,
/// with line continuations joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !current.is_empty() && trimmed.starts_with('#') {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
        current.clear();
    }
    out
}

/// The instructions of the last stage (the image that runs).
fn final_stage(all: &[Instruction]) -> &[Instruction] {
    let from = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("Dockerfile has a FROM");
    &all[from..]
}

/// An exec-form (JSON array) argument list.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("`{args}` is not the exec (JSON array) form: {e}"))
}

/// A `.dockerignore` pattern against a context-relative path, the way
/// Docker reads it: `*` and `?` within one segment, `**` across segments,
/// and a pattern that names a directory excludes everything below it.
fn pattern_matches(pattern: &str, path: &str) -> bool {
    fn segment(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => segment(&p[1..], s) || (!s.is_empty() && segment(p, &s[1..])),
            (Some(b'?'), Some(_)) => segment(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => segment(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn segments(p: &[&str], s: &[&str]) -> bool {
        match p.first() {
            None => true, // a matched prefix: the directory and all below it
            Some(&"**") => segments(&p[1..], s) || (!s.is_empty() && segments(p, &s[1..])),
            Some(first) => {
                !s.is_empty()
                    && segment(first.as_bytes(), s[0].as_bytes())
                    && segments(&p[1..], &s[1..])
            }
        }
    }
    let pattern: Vec<&str> = pattern
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments(&pattern, &path)
}

fn dockerignored(ignore: &str, path: &str) -> bool {
    let mut excluded = false;
    for line in ignore.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix('!') {
            Some(p) if pattern_matches(p, path) => excluded = false,
            None if pattern_matches(line, path) => excluded = true,
            _ => {}
        }
    }
    excluded
}

#[test]
fn dockerignore_matching_reads_patterns_like_docker() {
    let ignore = "target/\n**/*.pem\n.venv-test/\nbench/results*\n!keep.pem\n";
    assert!(dockerignored(ignore, "target/release/rack-gateway"));
    assert!(dockerignored(ignore, "tests/fixtures/ca.pem"));
    assert!(dockerignored(ignore, ".venv-test/bin/python"));
    assert!(dockerignored(ignore, "bench/results.md"));
    // Controls: what the build needs stays in.
    assert!(!dockerignored(ignore, "src/main.rs"));
    assert!(!dockerignored(ignore, "keep.pem"));
    assert!(!dockerignored(ignore, "tests/example-policy.yaml"));
    assert!(!dockerignored(ignore, "bench/load.sh"));
}

/// Every `COPY` from the build context names files that exist and that
/// `.dockerignore` lets through, and so does everything the sources embed
/// with `include_str!`; the final stage copies the binary the builder made.
#[test]
fn dockerfile_copy_sources_exist_in_the_build_context() {
    let root = root();
    let dockerfile = instructions(&read(&root.join("Dockerfile")));
    let ignore = read(&root.join(".dockerignore"));
    let mut copies = 0;
    for copy in dockerfile
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
    {
        let words: Vec<&str> = copy.args.split_whitespace().collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let sources: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        assert!(sources.len() >= 2, "COPY {} has no destination", copy.args);
        for src in &sources[..sources.len() - 1] {
            assert!(
                root.join(src).exists(),
                "COPY source `{src}` does not exist"
            );
            if *src != "." {
                assert!(
                    !dockerignored(&ignore, src),
                    "COPY source `{src}` is in .dockerignore"
                );
            }
            copies += 1;
        }
    }
    assert!(
        copies >= 3,
        "expected COPY Cargo.toml Cargo.lock and COPY . ."
    );

    // `COPY . .` then `cargo build`: what the build reads must not be ignored.
    let mut embedded = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let text = read(&path);
            for rest in text.split("include_str!(\"").skip(1) {
                let arg = &rest[..rest.find('"').unwrap()];
                let full = path.parent().unwrap().join(arg);
                let full = std::fs::canonicalize(&full)
                    .unwrap_or_else(|e| panic!("{rel}: include_str!(\"{arg}\"): {e}"));
                let rel = full
                    .strip_prefix(std::fs::canonicalize(&root).unwrap())
                    .unwrap();
                embedded.push(rel.to_str().unwrap().to_string());
            }
            embedded.push(rel);
        }
    }
    assert!(
        embedded.iter().any(|p| p == "users.yaml.example"),
        "{embedded:?}"
    );
    for path in &embedded {
        assert!(
            !dockerignored(&ignore, path),
            "{path} is needed by the build but in .dockerignore"
        );
    }
    for needed in ["target/", ".venv-test/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore does not exclude {needed}"
        );
    }

    let binary_copy = final_stage(&dockerfile)
        .iter()
        .find(|i| i.keyword == "COPY" && i.args.starts_with("--from=builder"))
        .expect("the final stage copies the binary from the builder");
    assert!(
        binary_copy
            .args
            .contains("/src/target/release/rack-gateway "),
        "{}",
        binary_copy.args
    );
}

/// The image runs as an unprivileged user the Dockerfile creates.
#[test]
fn dockerfile_runs_as_a_non_root_user() {
    let text = read(&root().join("Dockerfile"));
    let all = instructions(&text);
    let user = final_stage(&all)
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .expect("the final stage sets USER");
    let name = user.args.split(':').next().unwrap();
    assert!(
        !matches!(name, "root" | "0" | ""),
        "USER {} runs as root",
        user.args
    );
    if name.bytes().all(|b| b.is_ascii_digit()) {
        assert!(
            text.contains(&format!("--uid {name} ")),
            "USER {name}: no useradd --uid {name} in the Dockerfile"
        );
    }
    // Control: the parser does see a root USER as root.
    let root_user = instructions("FROM x\nUSER 0:0\n");
    assert_eq!(final_stage(&root_user)[1].args.split(':').next(), Some("0"));
}

/// ENTRYPOINT + CMD (and HEALTHCHECK, if the image has one) are commands
/// and flags the binary's CLI accepts.
#[tokio::test]
async fn dockerfile_entrypoint_and_cmd_are_cli_commands() {
    let all = instructions(&read(&root().join("Dockerfile")));
    let stage = final_stage(&all);
    let last = |kw: &str| stage.iter().rev().find(|i| i.keyword == kw);
    let entrypoint = exec_form(&last("ENTRYPOINT").expect("ENTRYPOINT").args);
    assert_eq!(entrypoint, ["rack-gateway"], "the entrypoint is the binary");
    let cmd = exec_form(&last("CMD").expect("CMD").args);
    let mut commands = vec![cmd];
    if let Some(hc) = last("HEALTHCHECK") {
        if hc.args != "NONE" {
            let (_, form) = hc.args.split_once("CMD").expect("HEALTHCHECK ... CMD");
            let mut words = exec_form(form.trim());
            assert_eq!(
                words.remove(0),
                "rack-gateway",
                "HEALTHCHECK runs the binary"
            );
            commands.push(words);
        }
    }
    for words in commands {
        assert_accepted(&words).await;
    }
    // Control: a command the CLI does not have is caught the same way.
    let (code, _, _) = run(&["serve", "--no-such-flag", "--help"], &[]).await;
    assert_ne!(code, Some(0));
}

async fn assert_accepted(words: &[String]) {
    let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
    args.push("--help");
    let (code, help, stderr) = run(&args, &[]).await;
    assert_eq!(code, Some(0), "rack-gateway {words:?} --help: {stderr}");
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        let flag = flag.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "rack-gateway {words:?}: no {flag} in its help"
        );
    }
}

/// The shipped binary is stripped: the release profile says so.
#[test]
fn release_profile_strips_the_binary() {
    let manifest = read(&root().join("Cargo.toml"));
    let release = manifest
        .split("\n[profile.release]\n")
        .nth(1)
        .expect("Cargo.toml has [profile.release]");
    let release = release.split("\n[").next().unwrap();
    assert!(release.contains("strip = \"symbols\""), "{release}");
    assert!(release.contains("debug = false"), "{release}");
}

/// The sources of `[package.metadata.deb] assets`: files in the repository
/// exist; generated ones (target/release/packaging/) are written by
/// scripts/deb.sh.
#[test]
fn deb_assets_exist_or_are_generated() {
    let root = root();
    let manifest = read(&root.join("Cargo.toml"));
    let deb = manifest
        .split("\n[package.metadata.deb]\n")
        .nth(1)
        .expect("Cargo.toml has [package.metadata.deb]");
    let deb = deb.split("\n[").next().unwrap();
    let script = read(&root.join("scripts/deb.sh"));
    let mut sources = Vec::new();
    for line in deb.lines().map(str::trim).filter(|l| l.starts_with("[\"")) {
        let fields: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(fields.len(), 3, "asset `{line}`: [source, dest, mode]");
        sources.push((fields[0], fields[1]));
    }
    assert!(sources.len() >= 10, "{sources:?}");
    for (src, dest) in &sources {
        if let Some(generated) = src.strip_prefix("target/release/packaging/") {
            let name = Path::new(generated).file_name().unwrap().to_str().unwrap();
            assert!(script.contains(name), "scripts/deb.sh does not write {src}");
        } else if *src == "target/release/rack-gateway" {
            assert_eq!(*dest, "usr/bin/");
        } else if let Some((dir, pattern)) = src.rsplit_once("/*") {
            let matches = std::fs::read_dir(root.join(dir))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_str()
                        .unwrap()
                        .ends_with(pattern)
                })
                .count();
            assert!(matches > 0, "asset {src} matches nothing");
        } else {
            assert!(root.join(src).is_file(), "asset {src} does not exist");
        }
    }
    for dest in ["usr/bin/", "lib/systemd/system/", "usr/share/man/man1/"] {
        assert!(
            sources.iter().any(|(_, d)| *d == dest),
            "nothing installed in {dest}"
        );
    }
}

/// The maintainer scripts are valid POSIX shell and never enable or start
/// the service (only `try-restart`, which leaves a stopped service stopped).
#[test]
fn deb_maintainer_scripts_never_start_the_service() {
    use std::os::unix::fs::PermissionsExt;
    let dir = root().join("packaging/deb");
    // Commands only: comments and here-document bodies (the printed next
    // steps) are text.
    let starts = |text: &str| {
        let mut heredoc_end: Option<String> = None;
        text.lines().map(str::trim).any(|l| {
            if let Some(end) = &heredoc_end {
                if l == end {
                    heredoc_end = None;
                }
                return false;
            }
            if l.starts_with('#') {
                return false;
            }
            if let Some((_, tag)) = l.split_once("<<") {
                heredoc_end = Some(
                    tag.trim_start_matches('-')
                        .trim()
                        .trim_matches('\'')
                        .to_string(),
                );
            }
            let words: Vec<&str> = l
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            words.windows(2).any(|w| {
                matches!(w[0], "systemctl" | "deb-systemd-invoke")
                    && matches!(w[1], "start" | "enable" | "restart" | "reload-or-restart")
            })
        })
    };
    assert!(
        starts("systemctl --system enable --now rack-gateway"),
        "control"
    );
    assert!(
        starts("cat <<'X'\nsystemctl start x\nX\nsystemctl start rack-gateway"),
        "control"
    );
    assert!(
        !starts("systemctl try-restart rack-gateway.service"),
        "control"
    );
    assert!(
        !starts("cat <<'X'\n  systemctl enable --now rack-gateway\nX"),
        "control"
    );
    for name in ["postinst", "prerm", "postrm"] {
        let path = dir.join(name);
        let text = read(&path);
        assert!(
            text.starts_with("#!/bin/sh\n"),
            "{name}: not a /bin/sh script"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is not executable");
        let syntax = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&syntax.stderr)
        );
        assert!(!starts(&text), "{name} starts or enables the service");
    }
}
