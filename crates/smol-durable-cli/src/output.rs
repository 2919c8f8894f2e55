//! Lines to stdout and stderr that never panic: when the reader goes away (`… | head -2`), the
//! output ends quietly and the command, and any run it drives, carries on to its normal end.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` and a newline to stdout, flushed (a line of events is for a reader waiting on
/// it). Returns false once stdout is closed; nothing is written after that.
pub fn stdout_line(text: impl Display) -> bool {
    write_line(&STDOUT_CLOSED, &mut std::io::stdout().lock(), text)
}

/// Writes `text` and a newline to stderr; false once stderr is closed.
pub fn stderr_line(text: impl Display) -> bool {
    write_line(&STDERR_CLOSED, &mut std::io::stderr().lock(), text)
}

/// Writes `text` to stdout as it is (no newline added).
pub fn stdout_text(text: impl Display) -> bool {
    let mut out = std::io::stdout().lock();
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let written = write!(out, "{text}").and_then(|()| out.flush());
    settle(&STDOUT_CLOSED, written)
}

fn write_line(closed: &AtomicBool, out: &mut impl Write, text: impl Display) -> bool {
    if closed.load(Ordering::Relaxed) {
        return false;
    }
    let written = writeln!(out, "{text}").and_then(|()| out.flush());
    settle(closed, written)
}

/// Any write error (a closed pipe, a full disk) ends that stream: output is best effort, the
/// run's outcome is in the database and the exit code.
fn settle(closed: &AtomicBool, written: std::io::Result<()>) -> bool {
    match written {
        Ok(()) => true,
        Err(_) => {
            closed.store(true, Ordering::Relaxed);
            false
        }
    }
}

/// A command line to paste into a POSIX shell: each word quoted as needed.
pub fn shell_line<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|word| {
            let word = word.as_ref();
            shlex::try_quote(word).map_or_else(|_| word.to_owned(), |quoted| quoted.into_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pretty JSON (two-space indent), as smol-wf prints results.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `println!` that survives a closed stdout.
macro_rules! outln {
    () => {{
        let _ = $crate::output::stdout_line("");
    }};
    ($($arg:tt)*) => {{
        let _ = $crate::output::stdout_line(format_args!($($arg)*));
    }};
}

/// `eprintln!` that survives a closed stderr.
macro_rules! errln {
    () => {{
        let _ = $crate::output::stderr_line("");
    }};
    ($($arg:tt)*) => {{
        let _ = $crate::output::stderr_line(format_args!($($arg)*));
    }};
}

pub(crate) use {errln, outln};
