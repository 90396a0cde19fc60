//! A progress indicator on stderr: a self-rewriting line on a terminal; elsewhere one line per
//! step, only once the work has taken longer than two seconds (quick runs stay silent).

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Progress of one long command.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    start: Instant,
    tty: bool,
    drawn: bool,
}

impl Progress {
    /// Starts timing `what`.
    pub fn new(what: &'static str) -> Self {
        Progress {
            what,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Reports that `done` of `total` steps are done and `step` is next.
    pub fn update(&mut self, done: usize, total: usize, step: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(
                err,
                "\r\x1b[2K{} [{done}/{total}] {step}  {t:.1} s",
                self.what
            );
            let _ = err.flush();
            self.drawn = true;
        } else if t > 2.0 && done < total {
            let _ = writeln!(err, "{} [{done}/{total}] {step}  {t:.1} s", self.what);
        }
    }

    /// Clears the line; returns the seconds elapsed.
    pub fn finish(&mut self) -> f64 {
        if self.tty && self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
        self.start.elapsed().as_secs_f64()
    }
}
