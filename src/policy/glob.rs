//! Minimal globs for names: `*` matches any run of characters (possibly
//! empty), `?` exactly one, everything else itself. No character classes, no
//! escapes: rack, app, service and operation names never need them, and a
//! smaller language is easier to reason about in a security policy.

/// A compiled glob; `Exact` avoids scanning for the common literal case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Glob {
    Any,
    Exact(String),
    Pattern(String),
}

impl Glob {
    pub fn new(p: &str) -> Glob {
        if p == "*" {
            Glob::Any
        } else if p.contains(['*', '?']) {
            Glob::Pattern(p.to_string())
        } else {
            Glob::Exact(p.to_string())
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(e) => e == s,
            Glob::Pattern(p) => glob_match(p, s),
        }
    }

    pub(crate) fn is_any(&self) -> bool {
        matches!(self, Glob::Any)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Glob::Any => "*",
            Glob::Exact(s) | Glob::Pattern(s) => s,
        }
    }
}

/// Iterative glob match with single-star backtracking: O(len(p) * len(s))
/// worst case, no recursion. ASCII input (every name in practice) is
/// matched byte by byte without allocating; other input by `char`.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        match_units(pattern.as_bytes(), text.as_bytes(), b'*', b'?')
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        match_units(&p, &t, '*', '?')
    }
}

fn match_units<T: PartialEq + Copy>(p: &[T], t: &[T], star: T, one: T) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] != star && (p[pi] == one || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == star {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = backtrack {
            pi = sp + 1;
            ti = st + 1;
            backtrack = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == star {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("apps *", "apps info"));
        assert!(!glob_match("apps *", "apps"));
        assert!(glob_match("checks:*", "checks:all"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("web-?", "web-1"));
        assert!(!glob_match("web-?", "web-12"));
        assert!(glob_match("prod*", "production"));
        assert!(!glob_match("staging", "staging2"));
        assert!(Glob::new("*").matches("anything"));
        assert!(Glob::new("billing").matches("billing"));
        assert!(glob_match("caf?", "café"));
        assert!(glob_match("*é", "café"));
        assert!(!glob_match("caf?", "cafés"));
    }
}
