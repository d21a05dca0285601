//! Writing to the terminal without panicking. `println!` panics when stdout is a closed pipe
//! (`icl-lab list | head`) or a full disk (`> /dev/full`), and `eprintln!` when stderr is; every
//! line the lab prints goes through here instead ([`outln!`](crate::outln), [`warnln!`](crate::warnln)):
//!
//! - stdout closed (EPIPE): the reader has what it wanted, so the process ends quietly with exit
//!   code 0, as Unix tools do;
//! - stdout failing otherwise (ENOSPC, EIO): one line on stderr and exit code 1, since the output
//!   asked for was not delivered;
//! - stderr failing: the message is dropped (there is nowhere left to say anything).
//!
//! Files the command wrote before are complete (every file is written atomically), so ending
//! here leaves nothing half-written.

use std::io::Write;

/// Writes `text` to stdout as is (flushing it), or ends the process as the module says.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        warn(&format!("error: writing to stdout: {e}"));
        std::process::exit(1);
    }
}

/// Writes one line to stderr; a failure to do so is ignored.
pub fn warn(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// `println!` that neither panics nor aborts on a closed or full stdout ([`out`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::term::out("\n") };
    ($($arg:tt)*) => { $crate::term::out(&format!("{}\n", format_args!($($arg)*))) };
}

/// `print!` through [`out`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::term::out(&format!($($arg)*)) };
}

/// `eprintln!` that never panics ([`warn`]).
#[macro_export]
macro_rules! warnln {
    ($($arg:tt)*) => { $crate::term::warn(&format!($($arg)*)) };
}

/// An error message on one line: its lines joined with ": ", and libtorch's C++ backtrace
/// (from "Exception raised from" on) left out.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Exception raised from") && !l.starts_with("frame #"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_become_one_line_without_libtorch_frames() {
        let torch = "Torch(\"Expected positive number of threads\nException raised from set_num_threads at x.cpp:46\nframe #0: c10::Error\")";
        assert_eq!(super::one_line(torch), "Torch(\"Expected positive number of threads");
        assert_eq!(
            super::one_line("invalid table header\n  duplicate key `a`\n"),
            "invalid table header: duplicate key `a`"
        );
    }
}
