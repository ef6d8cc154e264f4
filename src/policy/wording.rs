//! How a policy refusal reads to the person who typed a convox command.
//!
//! Policies speak in operation names ("releases create"); people type
//! `convox env set`. The stock CLI prints the gateway's error as one
//! `ERROR: ...` line, so a refusal names both — the operation, then the
//! commands the route serves (the route table's `commands` column) — and
//! stays on one line under [`MAX_CHARS`], with the deciding rule's
//! file:line at the end. The audit record keeps the untrimmed reason.

/// The longest refusal line a person is shown, in characters.
pub(crate) const MAX_CHARS: usize = 200;

/// How many of a route's commands a refusal names (the table lists the
/// most common first).
const MAX_COMMANDS: usize = 4;

/// `reason` (a policy verdict, `denied: ...`) with the commands the route
/// serves named after the first quoted `"op"`, or after `denied: ` when
/// the reason does not quote it; then fitted to one line.
/// `budget` is what is left of [`MAX_CHARS`] after the caller's prefix.
pub(crate) fn in_their_words(reason: &str, op: &str, commands: &str, budget: usize) -> String {
    let reason = reason.replace(['\r', '\n'], " ");
    let Some(typed) = typed(commands) else {
        return fit(&reason, budget);
    };
    let quoted = format!("\"{op}\"");
    // An operation decided as another (an exec into a run placeholder is
    // checked as "run") leads its reason with that one's name.
    let end = reason
        .find(&quoted)
        .map(|at| at + quoted.len())
        .or_else(|| {
            let rest = reason.strip_prefix("denied: \"")?;
            Some("denied: \"".len() + rest.find('"')? + 1)
        });
    let name = |typed: &str| match end {
        Some(end) => format!("{} ({typed}){}", &reason[..end], &reason[end..]),
        None => {
            let rest = reason.strip_prefix("denied: ").unwrap_or(&reason);
            format!("denied: {quoted} ({typed}): {rest}")
        }
    };
    // The reason is never cut when naming fewer commands avoids it: every
    // command, else the first; only then is the line cut (a long list of
    // allowed patterns between its items, never what to do next).
    let full = name(&typed);
    if full.chars().count() <= budget {
        return full;
    }
    let first = typed.split(", ").next().unwrap_or_default().to_string();
    let one = name(&first);
    if one.chars().count() <= budget {
        return one;
    }
    fit(&one, budget)
}

/// The route table's `commands` cell as a person would type it:
/// "`env set`, `env unset`, `env edit`, `releases rollback`, ..." becomes
/// "convox env set/unset/edit, releases rollback". `None` when no convox
/// command sends the route.
pub(crate) fn typed(commands: &str) -> Option<String> {
    let head = commands.split(';').next().unwrap_or_default().trim();
    if head.is_empty() || head.starts_with("none") || head.starts_with("every ") {
        return None;
    }
    if !head.starts_with('`') {
        return Some(head.replace('`', ""));
    }
    let bare = without_remarks(head);
    let names: Vec<&str> = bare
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .take(MAX_COMMANDS)
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(format!("convox {}", grouped(&names)))
}

/// `text` without its parenthesised remarks ("(attached)", "(key ...)").
fn without_remarks(text: &str) -> String {
    let mut depth = 0usize;
    text.chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    return false;
                }
                _ => {}
            }
            depth == 0
        })
        .collect()
}

/// Runs of commands under one noun share it: `env set/unset/edit`.
fn grouped(names: &[&str]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut last_noun: Option<&str> = None;
    for name in names {
        match name.split_once(' ') {
            Some((noun, verb)) if last_noun == Some(noun) => {
                if let Some(prev) = out.last_mut() {
                    prev.push('/');
                    prev.push_str(verb);
                }
            }
            Some((noun, _)) => {
                out.push((*name).to_string());
                last_noun = Some(noun);
            }
            None => {
                out.push((*name).to_string());
                last_noun = None;
            }
        }
    }
    out.join(", ")
}

/// `line` cut to at most `max` characters, keeping a trailing
/// parenthesised detail (the rule's file:line) whole: the middle gives way.
pub(crate) fn fit(line: &str, max: usize) -> String {
    if line.chars().count() <= max {
        return line.to_string();
    }
    // What to do next (": run rack-gateway login …") or the deciding
    // rule's location stays whole.
    let tail = line
        .rfind(": run ")
        .or_else(|| line.ends_with(')').then(|| line.rfind(" (")).flatten())
        .map(|at| &line[at..])
        .filter(|t| t.chars().count() < max / 2)
        .unwrap_or("");
    let keep = max - tail.chars().count() - 1;
    let head: String = line.chars().take(keep).collect();
    // Cut a list between its items when one ends near the cut.
    let near = head.len().saturating_sub(40);
    match head.rfind(", ").filter(|at| *at >= near) {
        Some(at) => format!("{}, …{tail}", &head[..at]),
        None => format!("{}…{tail}", head.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_as_typed() {
        let cell =
            "`env set`, `env unset`, `env edit`, `releases rollback`, `releases create-from`";
        assert_eq!(
            typed(cell).as_deref(),
            Some("convox env set/unset/edit, releases rollback")
        );
        assert_eq!(
            typed("`build`, `deploy`, `test` (key `tmp/<hex>.tgz`)").as_deref(),
            Some("convox build, deploy, test")
        );
        assert_eq!(
            typed("`exec`, `run` (attached), `test`").as_deref(),
            Some("convox exec, run, test")
        );
        assert_eq!(typed("none (Console)"), None);
        assert_eq!(typed("every websocket command (HEAD CLI)"), None);
        assert_eq!(
            typed("kubectl via `rack kubeconfig`").as_deref(),
            Some("kubectl via rack kubeconfig")
        );
    }

    #[test]
    fn the_commands_follow_the_operation() {
        let r = in_their_words(
            "denied: a@x.com may not \"releases create\" on staging/myapp (granted there: viewer users.yaml:5)",
            "releases create",
            "`env set`, `env unset`, `env edit`, `releases rollback`",
            MAX_CHARS,
        );
        assert_eq!(
            r,
            "denied: a@x.com may not \"releases create\" (convox env set/unset/edit, releases rollback) on staging/myapp (granted there: viewer users.yaml:5)"
        );
        let r = in_their_words("denied: x is not a resource", "proxy", "`proxy`", MAX_CHARS);
        assert_eq!(r, "denied: \"proxy\" (convox proxy): x is not a resource");
        let r = in_their_words("denied: \"apps\" is blocked", "apps", "none", MAX_CHARS);
        assert_eq!(r, "denied: \"apps\" is blocked");
        let r = in_their_words("denied: \"run\" of \"ls\"", "exec", "`exec`", MAX_CHARS);
        assert_eq!(r, "denied: \"run\" (convox exec) of \"ls\"");
    }

    #[test]
    fn long_lines_keep_their_rule_location() {
        let long = format!(
            "denied: may only {} on service web (roles/deployer.yaml:21)",
            "x".repeat(400)
        );
        let r = fit(&long, MAX_CHARS);
        assert_eq!(r.chars().count(), MAX_CHARS);
        assert!(r.ends_with("… (roles/deployer.yaml:21)"), "{r}");
        let list = format!(
            "denied: may only {} on web (r.yaml:2)",
            ["rake x"; 40].join(", ")
        );
        let r = fit(&list, MAX_CHARS);
        assert!(r.chars().count() <= MAX_CHARS, "{r}");
        assert!(r.ends_with("rake x, … (r.yaml:2)"), "{r}");
        assert!(!fit(&"é".repeat(300), 10).is_empty());
        assert_eq!(fit("short", 10), "short");
    }
}
