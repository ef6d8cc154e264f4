//! The run/exec command splitter (`policy::command::split`, go-shellquote's
//! `Split`): single-quoting any list of words and splitting it gives the
//! words back, so what the policy matched is what the rack executes.
//!
//! Input: mode byte; then a command line, or NUL-separated words.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rack_gateway::policy::command::split;

fn quote(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    let words: Vec<String> = if mode & 1 == 0 {
        match split(s) {
            Ok(w) => w,
            Err(_) => return,
        }
    } else {
        s.split('\0').map(str::to_owned).collect()
    };
    let quoted = quote(&words);
    assert_eq!(split(&quoted).as_ref(), Ok(&words), "quoted: {quoted:?}");
});
