//! go-shellquote's `Split` and `Join`, which the rack uses for run and exec
//! commands and for the `command` it reports (rack-semantics §5.1–§5.3).

/// Why `Split` failed; the messages are go-shellquote's.
#[derive(Debug, PartialEq, Eq)]
pub enum SplitError {
    SingleQuote,
    DoubleQuote,
    Escape,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitError::SingleQuote => "Unterminated single-quoted string",
            SplitError::DoubleQuote => "Unterminated double-quoted string",
            SplitError::Escape => "Unterminated backslash-escape",
        })
    }
}

/// Word splitting on space, tab and newline; single quotes are literal,
/// double quotes honour `\` before `$`, `` ` ``, `"`, `\` and newline;
/// backslash-newline outside quotes is a continuation. `#`, `;`, `|` and
/// `&` are ordinary characters.
pub(crate) fn split(input: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        // Skip separators and leading line continuations.
        loop {
            match chars.peek() {
                Some(' ' | '\n' | '\t') => {
                    chars.next();
                }
                Some('\\') => {
                    let mut ahead = chars.clone();
                    ahead.next();
                    match ahead.next() {
                        None => return Err(SplitError::Escape),
                        Some('\n') => {
                            chars = ahead;
                        }
                        Some(_) => break,
                    }
                }
                _ => break,
            }
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                ' ' | '\n' | '\t' => break,
                '\'' => loop {
                    match chars.next() {
                        None => return Err(SplitError::SingleQuote),
                        Some('\'') => break,
                        Some(c) => word.push(c),
                    }
                },
                '"' => loop {
                    match chars.next() {
                        None => return Err(SplitError::DoubleQuote),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err(SplitError::DoubleQuote),
                            Some('\n') => {}
                            Some(n @ ('$' | '`' | '"' | '\\')) => word.push(n),
                            Some(n) => {
                                word.push('\\');
                                word.push(n);
                            }
                        },
                        Some(c) => word.push(c),
                    }
                },
                '\\' => match chars.next() {
                    None => return Err(SplitError::Escape),
                    Some('\n') => {}
                    Some(n) => word.push(n),
                },
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

/// Backslash-escapes special characters, or single-quotes a word that has
/// whitespace; an empty word is `''`.
pub(crate) fn join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &str) -> String {
    const SPECIAL: &str = "\\'\"`${[|&;<>()*?!";
    if word.is_empty() {
        return "''".to_owned();
    }
    if word.contains([' ', '\t', '\n']) {
        let mut out = String::new();
        let mut parts = word.split('\'').peekable();
        while let Some(part) = parts.next() {
            if !part.is_empty() {
                out.push('\'');
                out.push_str(part);
                out.push('\'');
            }
            if parts.peek().is_some() {
                out.push_str("\\'");
            }
        }
        return out;
    }
    let mut out = String::new();
    for (i, c) in word.chars().enumerate() {
        if SPECIAL.contains(c) || (i == 0 && c == '~') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
