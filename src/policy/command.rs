//! Run/exec commands as the rack sees them, and the patterns that allow them.
//!
//! The rack splits the `Command` header into words with shell-style quoting
//! (go-shellquote's `Split`, convox-api.md §4) and executes the words
//! directly, without a shell. Matching policy against the same words means
//! `bash -c 'x'` is three words to both the rack and the gateway, and no
//! quoting trick can make one side see a different command than the other.

use super::glob::glob_match;

/// Why a command could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unterminated single quote")]
    UnterminatedSingle,
    #[error("unterminated double quote")]
    UnterminatedDouble,
    #[error("trailing backslash")]
    TrailingEscape,
}

/// Splits like go-shellquote: words separated by space, tab or newline;
/// single quotes are literal; double quotes honour `\` before `$`, `` ` ``,
/// `"`, `\` and newline; a backslash outside quotes escapes the next
/// character (and removes an escaped newline).
pub fn split(input: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                let next = chars.next().ok_or(SplitError::TrailingEscape)?;
                in_word = true;
                if next != '\n' {
                    cur.push(next);
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(SplitError::UnterminatedSingle),
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(SplitError::UnterminatedDouble),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err(SplitError::UnterminatedDouble),
                            Some('\n') => {}
                            Some(e @ ('$' | '`' | '"' | '\\')) => cur.push(e),
                            Some(other) => {
                                cur.push('\\');
                                cur.push(other);
                            }
                        },
                        Some(ch) => cur.push(ch),
                    }
                }
            }
            other => {
                in_word = true;
                cur.push(other);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// A command pattern: one glob per word; a final `**` matches any further
/// words (including none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPattern {
    pub source: String,
    words: Vec<String>,
    rest: bool,
}

/// Why a pattern can never be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty command pattern")]
    Empty,
    #[error("`**` may only be the last word of a command pattern")]
    InnerDoubleStar,
    #[error("{0}")]
    Split(#[from] SplitError),
}

impl CommandPattern {
    pub fn parse(source: &str) -> Result<CommandPattern, PatternError> {
        let mut words = split(source)?;
        let rest = words.last().is_some_and(|w| w == "**");
        if rest {
            words.pop();
        }
        if words.iter().any(|w| w == "**") {
            return Err(PatternError::InnerDoubleStar);
        }
        if words.is_empty() && !rest {
            return Err(PatternError::Empty);
        }
        Ok(CommandPattern {
            source: source.to_string(),
            words,
            rest,
        })
    }

    pub fn matches(&self, argv: &[String]) -> bool {
        if argv.len() < self.words.len() || (!self.rest && argv.len() != self.words.len()) {
            return false;
        }
        self.words.iter().zip(argv).all(|(p, w)| glob_match(p, w))
    }

    /// Whether the pattern is `**`: every command, including none.
    pub(crate) fn matches_anything(&self) -> bool {
        self.words.is_empty() && self.rest
    }
}

/// `sleep N`: the placeholder process an attached `convox run` creates
/// before the real command arrives on the exec websocket (§5.1).
pub(crate) fn is_run_placeholder(argv: &[String]) -> bool {
    argv.len() == 2
        && argv[0] == "sleep"
        && !argv[1].is_empty()
        && argv[1].len() <= 9
        && argv[1].bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn splits_like_shellquote() {
        assert_eq!(
            split("bash -c 'echo hi'").unwrap(),
            s(&["bash", "-c", "echo hi"])
        );
        assert_eq!(split("  a\t b\nc ").unwrap(), s(&["a", "b", "c"]));
        assert_eq!(
            split(r#"a "b \"c\" \$d \x" e"#).unwrap(),
            s(&["a", r#"b "c" $d \x"#, "e"])
        );
        assert_eq!(split(r"a\ b c").unwrap(), s(&["a b", "c"]));
        assert_eq!(split("x''y ''").unwrap(), s(&["xy", ""]));
        assert_eq!(split("rake\\\n db").unwrap(), s(&["rake", "db"]));
        assert_eq!(split("'a").unwrap_err(), SplitError::UnterminatedSingle);
        assert_eq!(split("\"a").unwrap_err(), SplitError::UnterminatedDouble);
        assert_eq!(split("a\\").unwrap_err(), SplitError::TrailingEscape);
        assert!(split("").unwrap().is_empty());
    }

    #[test]
    fn patterns() {
        let p = CommandPattern::parse("run_as_deploy rake checks:*").unwrap();
        assert!(p.matches(&s(&["run_as_deploy", "rake", "checks:all"])));
        assert!(!p.matches(&s(&["run_as_deploy", "rake", "checks:all", "extra"])));
        assert!(!p.matches(&s(&["run_as_deploy", "rake", "db:drop"])));
        let p = CommandPattern::parse("rake db:migrate").unwrap();
        assert!(p.matches(&split("rake   'db:migrate'").unwrap()));
        assert!(!p.matches(&split("rake db:migrate; rm -rf /").unwrap()));
        let p = CommandPattern::parse("bin/console **").unwrap();
        assert!(p.matches(&s(&["bin/console"])));
        assert!(p.matches(&s(&["bin/console", "-e", "x"])));
        let any = CommandPattern::parse("**").unwrap();
        assert!(any.matches(&s(&["rails", "console"])));
        assert_eq!(
            CommandPattern::parse("a ** b").unwrap_err(),
            PatternError::InnerDoubleStar
        );
        assert_eq!(
            CommandPattern::parse("  ").unwrap_err(),
            PatternError::Empty
        );
    }

    #[test]
    fn placeholder() {
        assert!(is_run_placeholder(&s(&["sleep", "3600"])));
        assert!(is_run_placeholder(&split("sleep 120").unwrap()));
        assert!(!is_run_placeholder(&s(&["sleep", "3600", "&&", "x"])));
        assert!(!is_run_placeholder(&s(&["sleep", "1e9"])));
        assert!(!is_run_placeholder(&s(&["sleep"])));
    }
}
