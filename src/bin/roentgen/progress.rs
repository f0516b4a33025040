//! Progress on stderr: an `indicatif` bar on a terminal, plain log lines otherwise (a
//! log file gets one line per image or per tenth of the steps, never a wall of `\r`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    start: Instant,
    start_pos: u64,
    len: u64,
    last_logged: u64,
    log_every: u64,
    per_hour: bool,
}

fn per_hour(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.0}", state.per_sec() * 3600.0);
}

impl Progress {
    /// A bar of `len` units named `what` ("images", "steps"), `done` of them already
    /// done. `rate` shows images per hour.
    pub fn new(what: &'static str, len: u64, done: u64, per_hour_rate: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = if per_hour_rate {
                "[{bar:30}] {pos}/{len} {msg_what} {per_hour}/h, {elapsed} elapsed, {eta} left {msg}"
            } else {
                "[{bar:30}] {pos}/{len} {msg_what}, {elapsed} elapsed, {eta} left {msg}"
            };
            let style = ProgressStyle::with_template(&template.replace("{msg_what}", what))
                .expect("a valid template")
                .with_key("per_hour", per_hour)
                .progress_chars("#>.");
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_position(done);
            bar.reset_eta();
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        Progress {
            bar,
            what,
            start: Instant::now(),
            start_pos: done,
            len,
            last_logged: done,
            log_every: (len / 10).max(1),
            per_hour: per_hour_rate,
        }
    }

    /// `pos` units done; `line` is what a log shows for it (logs get every unit when
    /// `every` is set, else about every tenth).
    pub fn set(&mut self, pos: u64, line: &str, every: bool) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(pos);
                bar.set_message(line.to_string());
            }
            None => {
                if every || pos >= self.last_logged + self.log_every || pos == self.len {
                    self.last_logged = pos;
                    let el = self.start.elapsed().as_secs_f64();
                    let rate = (pos - self.start_pos.min(pos)) as f64 / el.max(1e-9);
                    let left = if rate > 0.0 {
                        format!("{:.0} s left", (self.len - pos.min(self.len)) as f64 / rate)
                    } else {
                        "time left unknown".into()
                    };
                    let hourly = if self.per_hour {
                        format!(" {:.0}/h,", rate * 3600.0)
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "{pos}/{} {},{hourly} {:.0} s elapsed, {left} {line}",
                        self.len, self.what, el
                    );
                }
            }
        }
    }

    /// The bar's message (nothing in a log).
    pub fn message(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.to_string());
        }
    }

    /// A line above the bar (or in the log).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
