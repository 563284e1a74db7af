//! How long operations show they are alive on stderr. On a terminal: one
//! indicatif line redrawn in place, a spinner with the current step or a
//! byte bar for a download. Anywhere else (a pipe, a file, CI logs): the
//! plain lines, one per step, no escape codes, exactly what
//! the CLI always printed.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::image::ProgressEvent;

pub struct Progress {
    bar: Option<ProgressBar>,
    /// What starts each plain line (`hatch: ` for image builds).
    prefix: &'static str,
}

const TICK: Duration = Duration::from_millis(120);

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {wide_msg} [{elapsed}]").expect("valid template")
}

fn bytes_style() -> ProgressStyle {
    // The message last: it is cut to the terminal's width, not wrapped.
    ProgressStyle::with_template("{spinner} [{bar:24}] {bytes:>10}/{total_bytes:<10} {wide_msg}")
        .expect("valid template")
        .progress_chars("=> ")
}

impl Progress {
    /// Redrawn in place when stderr is a terminal, plain lines otherwise.
    pub fn on_stderr(prefix: &'static str) -> Progress {
        // Nothing is drawn before the first step (no empty spinner line).
        let bar = std::io::stderr()
            .is_terminal()
            .then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()));
        Progress { bar, prefix }
    }

    /// Whether this draws on a terminal (else it prints lines).
    pub fn is_terminal(&self) -> bool {
        self.bar.is_some()
    }

    /// Starts drawing on stderr (once) and animating the spinner.
    fn show(bar: &ProgressBar) {
        if bar.is_hidden() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(TICK);
        }
    }

    /// A step without a measure of how far it has come.
    pub fn step(&self, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_style(spinner_style());
                bar.set_message(message.to_string());
                Self::show(bar);
            }
            None => eprintln!("{}{message}", self.prefix),
        }
    }

    /// A step that moves `total` bytes; [`Progress::bytes_done`] moves the bar.
    pub fn bytes(&self, message: &str, total: u64) {
        match &self.bar {
            Some(bar) => {
                // Style and counts change without a redraw, the message
                // with one: no frame mixes two downloads' numbers.
                bar.set_style(bytes_style());
                bar.update(|state| {
                    state.set_len(total);
                    state.set_pos(0);
                });
                bar.set_message(message.to_string());
                Self::show(bar);
            }
            None => eprintln!("{}{message}", self.prefix),
        }
    }

    pub fn bytes_done(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// A line that stays (a warning, a result), printed above the bar.
    pub fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("{}{message}", self.prefix)),
            None => eprintln!("{}{message}", self.prefix),
        }
    }

    /// An image build's event, shown as the kind of step it is.
    pub fn image_event(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::Step(step) => self.step(step),
            ProgressEvent::Download { bytes: total, .. } | ProgressEvent::BulkDownload { bytes: total, .. } => {
                self.bytes(&event.to_string(), *total)
            }
            ProgressEvent::Bytes { done, .. } => self.bytes_done(*done),
            ProgressEvent::CacheHit { .. } | ProgressEvent::Warning(_) | ProgressEvent::Finished { .. } => {
                self.note(&event.to_string())
            }
        }
    }
}

impl Drop for Progress {
    /// The bar goes; what was printed with [`Progress::note`] stays.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
