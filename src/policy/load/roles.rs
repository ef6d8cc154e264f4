//! Role compilation: `roles/*.yaml` parsed, walked so every parent is
//! compiled before the roles that inherit it, each role compiled from its
//! own rules and then merged with its parents' compiled rules, so the
//! [`Role`]s the engine sees have inheritance already applied.

use std::collections::HashMap;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::raw::{RawCommands, RawRole};
use super::{parse, requirement, valid_name, Ctx, File};
use crate::policy::command::CommandPattern;
use crate::policy::glob::Glob;
use crate::policy::{
    CommandRule, Policy, Requirement, Role, RuleRef, PERMISSIONS, RESTRICTED_RUN_HEADERS,
};

/// A role file that parsed: its name (the file stem) and what it says.
struct Parsed<'a> {
    name: String,
    file: &'a File,
    raw: RawRole,
}

/// Where a role stands in the inheritance walk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    Visiting,
    Done,
    /// An ancestor is undefined or in a cycle; the role is not compiled.
    Failed,
}

/// Compiles every role file into `policy.roles` (in file order) and
/// indexes them by name.
pub(super) fn compile(ctx: &mut Ctx, policy: &mut Policy, files: &[File]) {
    let parsed = parse_roles(ctx, files);
    let names: HashMap<String, usize> = parsed
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.clone(), i))
        .collect();
    let order = inheritance_order(ctx, &parsed, &names);
    let mut compiled: Vec<Option<Role>> = vec![None; parsed.len()];
    for i in order {
        let mut role = compile_role(ctx, &parsed[i]);
        let parents: Vec<usize> = role
            .inherits
            .iter()
            .filter_map(|p| names.get(p).copied())
            .collect();
        for j in parents {
            if let Some(parent) = &compiled[j] {
                merge_inherited(&mut role, parent);
            }
        }
        compiled[i] = Some(role);
    }
    for role in compiled.into_iter().flatten() {
        policy
            .role_index
            .insert(role.name.clone(), policy.roles.len());
        policy.roles.push(role);
    }
}

/// Parses each role file whose name is a valid role name.
fn parse_roles<'a>(ctx: &mut Ctx, files: &'a [File]) -> Vec<Parsed<'a>> {
    let mut parsed = Vec::new();
    for f in files {
        let stem = f
            .rel
            .rsplit('/')
            .next()
            .unwrap_or(&f.rel)
            .trim_end_matches(".yaml")
            .to_string();
        if !valid_name(&stem) {
            ctx.err(
                &f.display,
                None,
                format!("role file name `{stem}` must be lower-case letters, digits, - or _"),
            );
            continue;
        }
        if let Some(raw) = parse::<RawRole>(ctx, f) {
            parsed.push(Parsed {
                name: stem,
                file: f,
                raw,
            });
        }
    }
    parsed
}

/// The roles to compile, parents first: a depth-first walk that reports
/// undefined parents and cycles and leaves out every role reaching one.
fn inheritance_order(
    ctx: &mut Ctx,
    parsed: &[Parsed<'_>],
    names: &HashMap<String, usize>,
) -> Vec<usize> {
    let mut order = Vec::new();
    let mut marks = vec![Mark::New; parsed.len()];
    for i in 0..parsed.len() {
        visit(ctx, i, parsed, names, &mut marks, &mut order);
    }
    order
}

/// Visits role `i` after its parents; whether it can be compiled.
fn visit(
    ctx: &mut Ctx,
    i: usize,
    parsed: &[Parsed<'_>],
    names: &HashMap<String, usize>,
    marks: &mut [Mark],
    order: &mut Vec<usize>,
) -> bool {
    match marks[i] {
        Mark::Done => return true,
        Mark::Visiting | Mark::Failed => return false,
        Mark::New => {}
    }
    marks[i] = Mark::Visiting;
    let Parsed { name, file, raw } = &parsed[i];
    let mut ok = true;
    for p in raw.inherits.iter().flatten() {
        match names.get(&p.value) {
            None => {
                ctx.err(
                    &file.display,
                    Some(p.referenced),
                    format!("role `{name}` inherits undefined role `{}`", p.value),
                );
                ok = false;
            }
            Some(&j) => {
                if !visit(ctx, j, parsed, names, marks, order) {
                    if marks[j] == Mark::Visiting {
                        ctx.err(
                            &file.display,
                            Some(p.referenced),
                            format!("role `{name}` inherits `{}`, which forms a cycle", p.value),
                        );
                    }
                    ok = false;
                }
            }
        }
    }
    marks[i] = if ok { Mark::Done } else { Mark::Failed };
    if ok {
        order.push(i);
    }
    ok
}

/// A role from its own rules alone, before anything is inherited.
fn compile_role(ctx: &mut Ctx, role: &Parsed<'_>) -> Role {
    let Parsed { name, file, raw } = role;
    let rel: Arc<str> = Arc::from(file.rel.as_str());
    let display = file.display.as_str();
    let (allow, allow_at) = ctx.ops(
        display,
        &file.rel,
        raw.allow.as_deref().unwrap_or(&[]),
        "allow",
    );
    let (deny, deny_at) = ctx.ops(
        display,
        &file.rel,
        raw.deny.as_deref().unwrap_or(&[]),
        "deny",
    );
    let (commands_allow, commands_deny) = match &raw.commands {
        Some(c) => command_rules(ctx, display, &rel, c),
        None => (Vec::new(), Vec::new()),
    };
    let run_headers = run_headers(ctx, display, &rel, raw.run_headers.as_deref());
    let permissions = permissions(ctx, display, &rel, raw.permissions.as_deref());
    let env_keys = env_keys(ctx, display, &rel, raw.env_keys.as_deref());
    let require = raw
        .require
        .as_ref()
        .and_then(|r| requirement(ctx, display, &file.rel, r));
    Role {
        name: name.clone(),
        file: rel,
        description: raw.description.clone().unwrap_or_default(),
        allow,
        allow_at,
        deny,
        deny_at,
        commands_allow,
        commands_deny,
        run_headers,
        permissions,
        env_keys,
        require,
        inherits: raw
            .inherits
            .iter()
            .flatten()
            .map(|p| p.value.clone())
            .collect(),
    }
}

/// `commands:`: the allow and deny command rules, per service glob.
fn command_rules(
    ctx: &mut Ctx,
    display: &str,
    rel: &Arc<str>,
    commands: &RawCommands,
) -> (Vec<CommandRule>, Vec<CommandRule>) {
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    for (map, out) in [(&commands.allow, &mut allow), (&commands.deny, &mut deny)] {
        for (service, list) in map.iter().flatten() {
            if service.is_empty() {
                ctx.err(
                    display,
                    Some(list.referenced),
                    "empty service name in commands",
                );
            }
            for p in &list.value {
                match CommandPattern::parse(&p.value) {
                    Ok(pattern) => out.push(CommandRule {
                        service: Glob::new(service),
                        pattern,
                        at: RuleRef {
                            file: rel.clone(),
                            line: list.referenced.line(),
                        },
                    }),
                    Err(e) => ctx.err(
                        display,
                        Some(p.referenced),
                        format!("command pattern `{}`: {e}", p.value),
                    ),
                }
            }
        }
    }
    (allow, deny)
}

/// `run_headers:`: restricted run headers the role may send, lower-cased.
fn run_headers(
    ctx: &mut Ctx,
    display: &str,
    rel: &Arc<str>,
    list: Option<&[Spanned<String>]>,
) -> Vec<(String, RuleRef)> {
    let mut out = Vec::new();
    for h in list.into_iter().flatten() {
        let lower = h.value.to_ascii_lowercase();
        if !RESTRICTED_RUN_HEADERS.contains(&lower.as_str()) {
            ctx.err(
                display,
                Some(h.referenced),
                format!("run_headers: `{}` is not a restricted run header (one of Image, Volumes, Environment, Privileged, Node-Labels, System-Critical)", h.value),
            );
            continue;
        }
        out.push((
            lower,
            RuleRef {
                file: rel.clone(),
                line: h.referenced.line(),
            },
        ));
    }
    out
}

/// `permissions:`: each must be one of [`PERMISSIONS`].
fn permissions(
    ctx: &mut Ctx,
    display: &str,
    rel: &Arc<str>,
    list: Option<&[Spanned<String>]>,
) -> Vec<(&'static str, RuleRef)> {
    let mut out = Vec::new();
    for p in list.into_iter().flatten() {
        let name = p.value.trim();
        match PERMISSIONS.iter().find(|k| **k == name) {
            Some(k) => out.push((
                *k,
                RuleRef {
                    file: rel.clone(),
                    line: p.referenced.line(),
                },
            )),
            None => ctx.err(
                display,
                Some(p.referenced),
                format!(
                    "permissions: `{}` is not a permission (one of {})",
                    p.value,
                    PERMISSIONS.join(", ")
                ),
            ),
        }
    }
    out
}

/// `env_keys:`: the key globs the role may change; `None` when the key is
/// absent (any key).
fn env_keys(
    ctx: &mut Ctx,
    display: &str,
    rel: &Arc<str>,
    list: Option<&[Spanned<String>]>,
) -> Option<Vec<(Glob, RuleRef)>> {
    for k in list.into_iter().flatten() {
        if k.value.trim().is_empty() || k.value.contains(['=', '\n']) {
            ctx.err(
                display,
                Some(k.referenced),
                format!("env_keys: `{}` is not an env key pattern", k.value),
            );
        }
    }
    list.map(|list| {
        list.iter()
            .map(|k| {
                (
                    Glob::new(k.value.trim()),
                    RuleRef {
                        file: rel.clone(),
                        line: k.referenced.line(),
                    },
                )
            })
            .collect()
    })
}

/// Adds a compiled parent's rules to `role`: the role's own rule stays the
/// one cited for an operation both name, and requirements add up.
fn merge_inherited(role: &mut Role, parent: &Role) {
    if let Some(pr) = &parent.require {
        role.require
            .get_or_insert_with(Requirement::default)
            .merge(pr);
    }
    for (mine, theirs) in role.allow_at.iter_mut().zip(&parent.allow_at) {
        if mine.is_none() {
            *mine = theirs.clone();
        }
    }
    for (mine, theirs) in role.deny_at.iter_mut().zip(&parent.deny_at) {
        if mine.is_none() {
            *mine = theirs.clone();
        }
    }
    role.allow = role.allow.union(parent.allow);
    role.deny = role.deny.union(parent.deny);
    role.commands_allow
        .extend(parent.commands_allow.iter().cloned());
    role.commands_deny
        .extend(parent.commands_deny.iter().cloned());
    role.run_headers.extend(parent.run_headers.iter().cloned());
    for perm in &parent.permissions {
        if !role.permissions.iter().any(|(n, _)| *n == perm.0) {
            role.permissions.push(perm.clone());
        }
    }
    if let Some(pk) = &parent.env_keys {
        role.env_keys
            .get_or_insert_with(Vec::new)
            .extend(pk.iter().cloned());
    }
}
