//! Progress that reaches a person whether or not stderr is a terminal: on a terminal, indicatif's
//! bars as usual; otherwise (a log file, a Slurm job, CI) the same bars rendered as plain lines on
//! stderr at most every [`LOG_EVERY`], so a long run shows it is alive without filling the log.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressDrawTarget, TermLike};

/// How often a non-terminal run logs its progress lines.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// Where bars draw: stderr's terminal, or [`LogLines`] when stderr is not one.
pub fn draw_target() -> ProgressDrawTarget {
    if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(LogLines::new(LOG_EVERY)), 1)
    }
}

/// A spinner for work of unknown length: `label`, the latest message and the time so far.
pub fn spinner(label: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(None, draw_target());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>14} {spinner} {msg}  ({elapsed})").expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// A [`MultiProgress`] drawing to [`draw_target`].
pub fn multi() -> MultiProgress {
    MultiProgress::with_draw_target(draw_target())
}

/// A pretend terminal that collects each redraw of the bars and writes it to stderr as plain
/// lines, at most once per `every` (the first one `every` after the start: commands that finish
/// sooner, or fail, print none).
#[derive(Debug)]
pub struct LogLines {
    every: Duration,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    /// The lines of the redraw in progress.
    frame: Vec<String>,
    current: String,
    last_written: Instant,
}

impl LogLines {
    pub fn new(every: Duration) -> Self {
        let state = LogState { frame: Vec::new(), current: String::new(), last_written: Instant::now() };
        Self { every, state: Mutex::new(state) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut LogState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.with(|st| {
            let line = std::mem::take(&mut st.current) + s;
            st.frame.push(line);
        });
        Ok(())
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.with(|st| st.current.push_str(s));
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        self.with(|st| st.current.clear());
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let lines = self.with(|st| {
            if !st.current.is_empty() {
                let line = std::mem::take(&mut st.current);
                st.frame.push(line);
            }
            let frame = std::mem::take(&mut st.frame);
            let due = st.last_written.elapsed() >= self.every;
            let lines: Vec<String> =
                frame.into_iter().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            if due && !lines.is_empty() {
                st.last_written = Instant::now();
                lines
            } else {
                Vec::new()
            }
        });
        let mut err = io::stderr().lock();
        for line in lines {
            writeln!(err, "[progress] {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redraws_become_rate_limited_lines() {
        let log = LogLines::new(Duration::from_millis(50));
        let start = log.with(|st| st.last_written);
        log.write_str("train [==>   ] 10/100").unwrap();
        log.flush().unwrap();
        assert_eq!(log.with(|st| st.last_written), start, "nothing before the first interval");
        std::thread::sleep(Duration::from_millis(60));
        log.clear_line().unwrap();
        log.write_str("train [====> ] 50/100").unwrap();
        log.flush().unwrap();
        let written = log.with(|st| st.last_written);
        assert!(written > start, "written once the interval passed");
        log.write_str("train [=====>] 60/100").unwrap();
        log.flush().unwrap();
        assert_eq!(log.with(|st| st.last_written), written, "the next one waits for the interval");
        assert!(log.with(|st| st.frame.is_empty() && st.current.is_empty()), "nothing piles up");
    }
}
