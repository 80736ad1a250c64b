//! Progress of long work (simulate, features, train, import, evaluate): a
//! bar or spinner redrawn in place when stderr is a terminal (indicatif), and
//! plain log lines now and then when it is not (a pipe, a file, CI), so a log
//! never fills with redraws.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain line is logged while the count moves, without a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    label: &'static str,
    /// `None` when stderr is not a terminal.
    bar: Option<ProgressBar>,
    last_plain: Instant,
}

impl Progress {
    /// A bar over `total` units (`unit`: "ticks", "snapshots", …).
    pub fn bar(label: &'static str, total: u64, unit: &str) -> Progress {
        let style = ProgressStyle::with_template(&format!(
            "{{prefix}}: [{{bar:30}}] {{pos}}/{{len}} {unit} ({{percent}}%, {{elapsed}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Progress::with(label, Some(total), style)
    }

    /// A spinner with a message, for work whose total is not known.
    pub fn spinner(label: &'static str) -> Progress {
        let style = ProgressStyle::with_template("{prefix}: {spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        Progress::with(label, None, style)
    }

    fn with(label: &'static str, total: Option<u64>, style: ProgressStyle) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr()).with_style(style).with_prefix(label);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { label, bar, last_plain: Instant::now() }
    }

    /// `done` of the total so far.
    pub fn set(&mut self, done: u64, total: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if done == total || self.last_plain.elapsed() >= PLAIN_EVERY => {
                self.last_plain = Instant::now();
                let percent = 100.0 * done as f64 / total.max(1) as f64;
                tracing::info!(done, total, "{}: {percent:.0}%", self.label);
            }
            None => {}
        }
    }

    /// A step of the work described in words: the spinner's message on a
    /// terminal, else a log line (the callers say such steps rarely).
    pub fn message(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(line.to_owned()),
            None => tracing::info!("{}: {line}", self.label),
        }
    }

    /// Clears the bar (the command's own summary line follows it).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The training epoch's spinner, for the trainer's `on_bar` (a plain `fn`,
/// so the bar lives here): `Some(text)` draws it, `None` clears it before
/// the epoch's line is printed.
pub fn epoch_bar(text: Option<&str>) {
    static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let mut slot = BAR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match text {
        Some(t) => slot
            .get_or_insert_with(|| {
                let style = ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style)
            })
            .set_message(t.to_owned()),
        None => {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        }
    }
}
