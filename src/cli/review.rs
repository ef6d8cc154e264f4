//! Access review commands: `diff` (what a config change does to people's
//! access, from two directories or two Git revisions) and `who-can`
//! (every identity that may do one thing, with the grant that allows it).
//! Both are offline and use the pure engine that serves requests
//! ([`crate::policy::diff`], [`crate::policy::access`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::json;

use super::print_config_errors;
use crate::config::{self, Config, Env, MemSource};
use crate::policy::diff::{scope_label, AccessDiff};
use crate::policy::{Facts, Process, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// For a terminal.
    Text,
    /// A pull-request comment.
    Markdown,
    /// Stable, documented JSON (README "Reviewing access changes").
    Json,
}

/// Exit code of `diff` on errors (like diff(1)).
const EXIT_ERROR: u8 = 2;

/// `diff OLD NEW` or `diff --repo DIR OLDREV NEWREV` / `diff --repo DIR A...B`.
pub(super) fn diff(args: &[String], repo: Option<&Path>, format: DiffFormat) -> ExitCode {
    let loaded = match repo {
        None => match args {
            [old, new] => load_dir("OLD", Path::new(old)).and_then(|o| {
                load_dir("NEW", Path::new(new)).map(|n| (o, n, old.clone(), new.clone()))
            }),
            _ => Err("diff needs two config directories: `rack-gateway diff OLD NEW` (or --repo DIR OLDREV NEWREV)".into()),
        },
        Some(dir) => load_revisions(dir, args),
    };
    let (old, new, old_label, new_label) = match loaded {
        Ok(x) => x,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("rack-gateway diff: {e}");
            }
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let d = crate::policy::diff::diff(&old, &new, crate::clock::unix_now());
    let out = match format {
        DiffFormat::Text => text(&d),
        DiffFormat::Markdown => markdown(&d, &old_label, &new_label),
        DiffFormat::Json => json_report(&d, &old_label, &new_label),
    };
    print!("{out}");
    if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn env() -> Env {
    Env::from_process().secrets_optional()
}

/// Loads one side; an invalid config prints its problems (file:line, as
/// `check` does) and yields an empty error.
fn load_dir(which: &str, dir: &Path) -> Result<Config, String> {
    config::load_dir(dir, &env()).map_err(|e| {
        print_config_errors(&e);
        format!(
            "{which} ({}) is not a valid config; fix the problems above",
            dir.display()
        )
    })
}

fn load_revisions(dir: &Path, args: &[String]) -> Result<(Config, Config, String, String), String> {
    let repo = git2::Repository::open(dir)
        .map_err(|e| format!("{} is not a Git repository: {}", dir.display(), e.message()))?;
    let (old_rev, new_rev) = match args {
        [range] if range.contains("...") => {
            let (a, b) = range.split_once("...").unwrap_or_default();
            let b = if b.is_empty() { "HEAD" } else { b };
            let id = |r: &str| {
                repo.revparse_single(r)
                    .and_then(|o| o.peel_to_commit())
                    .map(|c| c.id())
                    .map_err(|e| format!("revision `{r}`: {}", e.message()))
            };
            let base = repo
                .merge_base(id(a)?, id(b)?)
                .map_err(|e| format!("`{range}`: no merge base: {}", e.message()))?;
            (base.to_string(), b.to_string())
        }
        [range] if range.contains("..") => {
            let (a, b) = range.split_once("..").unwrap_or_default();
            (
                a.to_string(),
                if b.is_empty() {
                    "HEAD".into()
                } else {
                    b.to_string()
                },
            )
        }
        [a, b] => (a.clone(), b.clone()),
        _ => return Err("--repo needs OLDREV NEWREV or a range like main...HEAD".into()),
    };
    let side = |which: &str, rev: &str| -> Result<Config, String> {
        let (_, files) = crate::reload::git::read_revision(&repo, rev)?;
        let src = MemSource {
            files,
            label: format!("{rev}:"),
            base: dir.to_path_buf(),
        };
        config::load(&src, &env()).map_err(|e| {
            print_config_errors(&e);
            format!("{which} ({rev}) is not a valid config; fix the problems above")
        })
    };
    Ok((
        side("OLD", &old_rev)?,
        side("NEW", &new_rev)?,
        old_rev,
        new_rev,
    ))
}

fn text(d: &AccessDiff) -> String {
    let mut s = format!("{}\n", d.summary());
    for i in &d.identities {
        s.push_str(&format!(
            "\n{} {} ({}):\n",
            i.kind,
            i.name,
            i.status.as_str()
        ));
        for c in &i.changes {
            let risk = if c.risks.is_empty() {
                String::new()
            } else {
                format!(" [{}]", c.risks.join(", "))
            };
            s.push_str(&format!(
                "  {} {} on {}{risk}\n      {}: {}\n",
                if c.gained { "+" } else { "-" },
                c.fact.item.describe(),
                scope_label(&c.fact),
                if c.gained { "now" } else { "was" },
                c.rule
            ));
        }
        for c in &i.conditions {
            s.push_str(&format!(
                "  ~ {} {}: {} ({}){}\n",
                c.what(),
                c.change,
                c.values(),
                c.rule,
                risk_tag(&c.risks)
            ));
        }
    }
    if !d.global.is_empty() {
        s.push_str("\ngateway-wide:\n");
        for g in &d.global {
            let risk = if g.risks.is_empty() {
                String::new()
            } else {
                format!(" [{}]", g.risks.join(", "))
            };
            s.push_str(&format!("  {} {}: {}{risk}\n", g.change, g.section, g.item));
        }
    }
    s
}

fn risk_tag(risks: &[&str]) -> String {
    if risks.is_empty() {
        String::new()
    } else {
        format!(" [{}]", risks.join(", "))
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn markdown(d: &AccessDiff, old: &str, new: &str) -> String {
    let mut s = format!(
        "**Access review** (`{}` → `{}`): {}\n",
        cell(old),
        cell(new),
        d.summary()
    );
    if !d.global.is_empty() {
        s.push_str("\n#### Gateway-wide rules\n\n| Change | Rule | Risk |\n|---|---|---|\n");
        for g in &d.global {
            s.push_str(&format!(
                "| {} {} | {} | {} |\n",
                g.change,
                g.section,
                cell(&g.item),
                risk_cell(&g.risks)
            ));
        }
    }
    for i in &d.identities {
        s.push_str(&format!(
            "\n#### {} `{}` ({})\n\n",
            i.kind,
            cell(&i.name),
            i.status.as_str()
        ));
        s.push_str("| | Access | Where | Rule | Risk |\n|---|---|---|---|---|\n");
        for c in &i.changes {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                if c.gained { "➕ gains" } else { "➖ loses" },
                cell(&c.fact.item.describe()),
                cell(&scope_label(&c.fact)),
                cell(&c.rule),
                risk_cell(&c.risks)
            ));
        }
        for c in &i.conditions {
            s.push_str(&format!(
                "| ✏️ {} | {} | {} | {} | {} |\n",
                c.change,
                cell(&c.what()),
                cell(&c.values()),
                cell(&c.rule),
                risk_cell(&c.risks)
            ));
        }
    }
    s
}

fn risk_cell(risks: &[&str]) -> String {
    if risks.is_empty() {
        String::new()
    } else {
        format!("⚠️ {}", risks.join(", "))
    }
}

fn json_report(d: &AccessDiff, old: &str, new: &str) -> String {
    let identities: Vec<_> = d
        .identities
        .iter()
        .map(|i| {
            let changes: Vec<_> = i
                .changes
                .iter()
                .map(|c| {
                    json!({
                        "change": if c.gained { "gained" } else { "lost" },
                        "kind": c.fact.item.kind(),
                        "access": c.fact.item.describe(),
                        "rack": c.fact.rack,
                        "apps": c.fact.apps.to_vec(),
                        "rule": c.rule,
                        "risks": c.risks,
                    })
                })
                .collect();
            let conditions: Vec<_> = i
                .conditions
                .iter()
                .map(|c| {
                    json!({
                        "change": c.change,
                        "kind": c.kind,
                        "grant": c.grant,
                        "old": c.old,
                        "new": c.new,
                        "rule": c.rule,
                        "risks": c.risks,
                    })
                })
                .collect();
            json!({"kind": i.kind, "name": i.name, "status": i.status.as_str(), "changes": changes, "conditions": conditions})
        })
        .collect();
    let global: Vec<_> = d
        .global
        .iter()
        .map(
            |g| json!({"section": g.section, "change": g.change, "item": g.item, "risks": g.risks}),
        )
        .collect();
    let v = json!({
        "version": 1,
        "old": old,
        "new": new,
        "changed": !d.is_empty(),
        "summary": d.summary(),
        "identities": identities,
        "global": global,
    });
    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// What `who-can` asks.
pub(super) struct WhoCanQuery {
    pub(super) operation: String,
    pub(super) rack: Option<String>,
    pub(super) app: Option<String>,
    pub(super) service: Option<String>,
    pub(super) command: Option<String>,
    pub(super) config: Option<PathBuf>,
}

/// `who-can`: every identity the policy allows, with the grant (file:line).
pub(super) fn who_can(q: WhoCanQuery) -> ExitCode {
    let dir = q.config.unwrap_or_else(|| PathBuf::from("."));
    let cfg = match config::load_dir(&dir, &env()) {
        Ok(c) => c,
        Err(e) => {
            print_config_errors(&e);
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let Some(rack) = q.rack else {
        eprintln!("rack-gateway who-can: name the rack with --rack R");
        return ExitCode::from(EXIT_ERROR);
    };
    let op = q.operation.as_str();
    if crate::policy::op_index(op).is_none() {
        eprintln!("rack-gateway who-can: unknown operation `{op}` (see `rack-gateway routes`)");
        return ExitCode::from(EXIT_ERROR);
    }
    let p = &cfg.policy;
    let facts = Facts {
        rack: &rack,
        operation: op,
        app: q.app.as_deref(),
        service: q.service.as_deref(),
        command: q.command.as_deref(),
        ..Facts::default()
    };
    let process = Process {
        service: q.service.clone().unwrap_or_default(),
        command: "-".into(),
    };
    let mut subjects: Vec<(&str, &crate::policy::Subject)> = p
        .users
        .values()
        .map(|s| ("user", s))
        .chain(p.domains.values().map(|s| ("domain", s)))
        .chain(p.ci.values().map(|s| ("ci", s)))
        .collect();
    subjects.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    let mut any = false;
    for (kind, s) in subjects {
        if let Verdict::Allow(reason) = p.decide_assuming(s, &facts, &process) {
            any = true;
            let grant = crate::policy::op_index(op).and_then(|i| {
                s.grants
                    .iter()
                    .find(|g| g.covers(&rack, facts.app, op) && p.roles[g.role].allow.contains(i))
            });
            match grant {
                Some(g) => println!(
                    "{kind} {}: {} on {} ({}); {reason}",
                    s.name,
                    p.roles[g.role].name,
                    g.scope(),
                    g.at
                ),
                None => println!("{kind} {}: {reason}", s.name),
            }
        }
    }
    if !any {
        let scope = match &q.app {
            Some(a) => format!("{rack}/{a}"),
            None => rack.clone(),
        };
        println!("nobody may \"{op}\" on {scope}");
    }
    ExitCode::SUCCESS
}
