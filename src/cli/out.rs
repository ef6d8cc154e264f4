//! Standard output for the printing commands. `println!` panics when the
//! reader has gone (`rack-gateway routes | head`); these end the command
//! quietly instead, with success: a reader that stops early is not an
//! error. Any other write failure is one line on stderr and exit 1.

use std::io::{ErrorKind, Write};

/// Writes `args` to stdout and flushes it.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(
            std::io::stderr(),
            "rack-gateway: cannot write to stdout: {e}"
        );
        std::process::exit(1);
    }
}

/// `print!` that never panics on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::out::write(format_args!($($t)*)) };
}

/// `println!` that never panics on a closed pipe.
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($t)*))) };
}

pub(crate) use {out, outln};
