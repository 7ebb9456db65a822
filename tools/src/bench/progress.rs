//! The live progress line (indicatif), like fio's status line: elapsed time, IOPS and MiB/s
//! over the last interval. Hidden when stderr is not a terminal or the output is JSON.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the line is redrawn.
const REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// The progress line of one run.
pub struct Progress {
    bar: ProgressBar,
    last_at: Instant,
    last_ops: u64,
    last_bytes: u64,
    unit: &'static str,
}

impl Progress {
    /// A line for a run of `total` (bytes, or milliseconds when time based); hidden unless
    /// `visible` and stderr is a terminal.
    pub fn new(visible: bool, name: &str, total: u64, unit: &'static str) -> Progress {
        let bar = if visible && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(name.to_string());
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            last_at: Instant::now(),
            last_ops: 0,
            last_bytes: 0,
            unit,
        }
    }

    /// Updates the line if the refresh interval has passed. `position` is in the unit of
    /// `total`; `ops` and `bytes` are running totals; the rate of `ops` is shown in `unit`.
    pub fn update(&mut self, now: Instant, position: u64, ops: u64, bytes: u64) {
        let interval = now.saturating_duration_since(self.last_at);
        if interval < REFRESH_INTERVAL || self.bar.is_hidden() {
            return;
        }
        let seconds = interval.as_secs_f64();
        let ops_rate = (ops - self.last_ops) as f64 / seconds;
        let mib_rate = (bytes - self.last_bytes) as f64 / seconds / (1u64 << 20) as f64;
        self.bar.set_position(position);
        self.bar
            .set_message(format!("{ops_rate:.0} {}, {mib_rate:.1} MiB/s", self.unit));
        self.last_at = now;
        self.last_ops = ops;
        self.last_bytes = bytes;
    }

    /// Removes the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
