//! How `basalt demo` prints: one line per step, stamped with the time since the demo began,
//! and latency summaries from a histogram.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Prints the demo's steps.
pub struct Steps {
    began: Instant,
}

impl Steps {
    /// Starts the clock.
    pub fn new() -> Steps {
        Steps {
            began: Instant::now(),
        }
    }

    /// Prints one step: `[  12.3s] text`.
    pub fn step(&self, text: impl AsRef<str>) {
        let t = self.began.elapsed().as_secs_f64();
        println!("[{t:6.1}s] {}", text.as_ref());
    }

    /// Prints a detail line under a step.
    pub fn detail(&self, text: impl AsRef<str>) {
        println!("           {}", text.as_ref());
    }

    /// Prints a timed step of `count` operations (`what: took, rate`) and their latency
    /// summary as its detail (`op latency: ...`).
    pub fn timed(&self, what: &str, count: usize, took: Duration, op: &str, lat: &Latencies) {
        self.step(format!("{what}: {}, {}", secs(took), rate(count, took)));
        self.detail(format!("{op} latency: {}", lat.summary()));
    }

    /// Time since the demo began.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }
}

impl Default for Steps {
    fn default() -> Self {
        Steps::new()
    }
}

/// Latencies of one kind of operation, in microseconds.
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Latencies {
    /// An empty record (1 µs to 1 h, 3 significant digits).
    pub fn new() -> Latencies {
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("constant histogram bounds are valid");
        Latencies { hist }
    }

    /// Records one operation.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.max(1));
    }

    /// Adds `other`'s records.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// `p50 0.42 ms, p99 1.30 ms, max 3.10 ms`.
    pub fn summary(&self) -> String {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(0.5),
            ms(0.99),
            self.hist.max() as f64 / 1000.0
        )
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

/// `1,234/s` for `count` operations in `elapsed`.
pub fn rate(count: usize, elapsed: Duration) -> String {
    let per_s = count as f64 / elapsed.as_secs_f64().max(1e-9);
    let n = per_s.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{out}/s")
}

/// `1.23 s` or `456 ms`.
pub fn secs(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}
