//! Lock-free store metrics: counters, gauges and latency histograms the store loop updates with
//! relaxed atomics, and a renderer to the Prometheus text exposition format (version 0.0.4).
//!
//! Nothing here allocates on the update path or takes a lock: a [`StoreMetrics`] is shared as an
//! `Arc` between the store loop, its workers and the `/metrics` endpoint, which reads it at any
//! time. Reads are not a consistent snapshot across metrics (each value is read on its own);
//! a histogram's `_count` is computed from the same bucket reads as its `_bucket` lines, so
//! those always agree within one page.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (leaders held, regions open).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `delta` (negative to decrease).
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Mantissas of the bucket bounds within one decade, in units of the decade's tenth: 1, 2, 3, 5,
/// 7.5 times the decade. Neighbouring bounds differ by at most x2, so a quantile read from the
/// buckets is off by less than a factor of two even before interpolation.
const BOUND_MANTISSAS: [u64; 5] = [10, 20, 30, 50, 75];
/// Decades covered: 10 µs, 100 µs, 1 ms, 10 ms, 100 ms, 1 s.
const BOUND_DECADES: usize = 6;
/// Number of finite bucket bounds (the last one is 10 s); a final bucket counts everything above.
pub const HISTOGRAM_BOUND_COUNT: usize = BOUND_MANTISSAS.len() * BOUND_DECADES + 1;

const fn histogram_bounds_ns() -> [u64; HISTOGRAM_BOUND_COUNT] {
    let mut out = [0u64; HISTOGRAM_BOUND_COUNT];
    // 10 µs = 10_000 ns; a mantissa of 10 means 1x the decade base of 1 µs.
    let mut decade_ns = 1_000u64;
    let mut d = 0;
    while d < BOUND_DECADES {
        let mut m = 0;
        while m < BOUND_MANTISSAS.len() {
            out[d * BOUND_MANTISSAS.len() + m] = BOUND_MANTISSAS[m] * decade_ns;
            m += 1;
        }
        decade_ns *= 10;
        d += 1;
    }
    out[HISTOGRAM_BOUND_COUNT - 1] = 10 * decade_ns;
    out
}

/// Upper bounds (inclusive, nanoseconds) of the histogram buckets: 10 µs … 10 s.
pub const HISTOGRAM_BOUNDS_NS: [u64; HISTOGRAM_BOUND_COUNT] = histogram_bounds_ns();

const _: () = assert!(HISTOGRAM_BOUNDS_NS[0] == 10_000);
const _: () = assert!(HISTOGRAM_BOUNDS_NS[HISTOGRAM_BOUND_COUNT - 1] == 10_000_000_000);

/// A latency histogram with the fixed buckets [`HISTOGRAM_BOUNDS_NS`] plus one for slower values.
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative bucket counts; index `HISTOGRAM_BOUND_COUNT` is the overflow bucket.
    buckets: [AtomicU64; HISTOGRAM_BOUND_COUNT + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Non-cumulative counts per bucket; the last entry counts values above 10 s.
    pub buckets: [u64; HISTOGRAM_BOUND_COUNT + 1],
    /// Sum of the recorded values in nanoseconds (saturating).
    pub sum_ns: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = HISTOGRAM_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        // Saturation is unreachable in practice (584 years of summed latency), but must not wrap.
        let _ = self
            .sum_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_add(ns))
            });
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.snapshot().count()
    }

    /// Sum of the observations.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed))
    }

    /// Copies the current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }

    /// Estimated `q`-quantile (`0.0..=1.0`), see [`HistogramSnapshot::quantile`].
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.snapshot().quantile(q)
    }
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Estimated `q`-quantile, `None` when empty. Interpolates linearly inside the bucket holding
    /// the rank (the first bucket from 0), so the result lies within that bucket's bounds; values
    /// above 10 s report 10 s. Good for tests and notes, not for exact figures.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        assert!((0.0..=1.0).contains(&q), "quantile {q} outside 0..=1");
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (q * count as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&hi) = HISTOGRAM_BOUNDS_NS.get(i) else {
                    return Some(Duration::from_nanos(HISTOGRAM_BOUNDS_NS[i - 1]));
                };
                let lo = if i == 0 {
                    0
                } else {
                    HISTOGRAM_BOUNDS_NS[i - 1]
                };
                let frac = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                let ns = lo as f64 + frac * (hi - lo) as f64;
                return Some(Duration::from_nanos(ns as u64));
            }
            below += n;
        }
        unreachable!("rank {rank} <= count {count} lies in some bucket")
    }
}

/// Every metric of one store. Fields are public: the store loop updates them directly.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Client proposals handed to Raft.
    pub proposals_total: Counter,
    /// Proposals dropped (no leader, leader change, back-pressure) and answered with an error.
    pub proposals_dropped_total: Counter,
    /// Entries learned committed, over all regions.
    pub committed_entries_total: Counter,
    /// Entries applied to the state store.
    pub applied_entries_total: Counter,
    /// Apply tasks the store loop applied on its own thread instead of the apply worker's
    /// (`state::worker::InlineApply`).
    pub inline_apply_tasks_total: Counter,
    /// Log write batches submitted.
    pub log_batches_total: Counter,
    /// Bytes written to the log.
    pub log_bytes_written_total: Counter,
    /// Log batch latency from submit to durable (includes the flush).
    pub log_write_latency: Histogram,
    /// Write latency from propose to applied, on the leader.
    pub commit_latency: Histogram,
    /// Reads served through ReadIndex.
    pub read_index_total: Counter,
    /// Reads served from the leader lease.
    pub lease_reads_total: Counter,
    /// Snapshots sent to other stores.
    pub snapshots_sent_total: Counter,
    /// Snapshots received and installed.
    pub snapshots_received_total: Counter,
    /// Snapshots that failed (either direction).
    pub snapshots_failed_total: Counter,
    /// Raft messages handed to the transport.
    pub raft_messages_sent_total: Counter,
    /// Raft messages received from the transport.
    pub raft_messages_received_total: Counter,
    /// Leader changes observed by this store's peers.
    pub leader_changes_total: Counter,
    /// Regions whose peer on this store is the leader.
    pub leaders: Gauge,
    /// Region peers on this store.
    pub regions: Gauge,
    /// Region peers on this store that are hibernating (not ticking).
    pub hibernating_regions: Gauge,
    /// Ticks of the store loop.
    pub ticks_total: Counter,
}

/// A borrowed metric of one of the three kinds.
enum MetricRef<'a> {
    Counter(&'a Counter),
    Gauge(&'a Gauge),
    Histogram(&'a Histogram),
}

/// One metric family: its exposed name (without the `basalt_` prefix), help and accessor.
struct Family {
    name: &'static str,
    help: &'static str,
    /// `counter`, `gauge` or `histogram`.
    kind: &'static str,
    get: for<'a> fn(&'a StoreMetrics) -> MetricRef<'a>,
}

macro_rules! kind_text {
    (Counter) => {
        "counter"
    };
    (Gauge) => {
        "gauge"
    };
    (Histogram) => {
        "histogram"
    };
}

macro_rules! family {
    ($kind:ident, $field:ident, $name:literal, $help:literal) => {
        Family {
            name: $name,
            help: $help,
            kind: kind_text!($kind),
            get: |m| MetricRef::$kind(&m.$field),
        }
    };
}

const FAMILIES: &[Family] = &[
    family!(
        Counter,
        proposals_total,
        "proposals_total",
        "Client proposals handed to Raft."
    ),
    family!(
        Counter,
        proposals_dropped_total,
        "proposals_dropped_total",
        "Proposals dropped and answered with a retryable error."
    ),
    family!(
        Counter,
        committed_entries_total,
        "committed_entries_total",
        "Raft entries committed."
    ),
    family!(
        Counter,
        applied_entries_total,
        "applied_entries_total",
        "Raft entries applied to the state store."
    ),
    family!(
        Counter,
        inline_apply_tasks_total,
        "inline_apply_tasks_total",
        "Apply tasks the store loop applied on its own thread instead of the apply worker's."
    ),
    family!(
        Counter,
        log_batches_total,
        "log_batches_total",
        "Log write batches submitted."
    ),
    family!(
        Counter,
        log_bytes_written_total,
        "log_bytes_written_total",
        "Bytes written to the Raft log."
    ),
    family!(
        Histogram,
        log_write_latency,
        "log_write_latency_seconds",
        "Log batch latency from submit to durable."
    ),
    family!(
        Histogram,
        commit_latency,
        "commit_latency_seconds",
        "Write latency from propose to applied on the leader."
    ),
    family!(
        Counter,
        read_index_total,
        "read_index_total",
        "Reads served through ReadIndex."
    ),
    family!(
        Counter,
        lease_reads_total,
        "lease_reads_total",
        "Reads served from the leader lease."
    ),
    family!(
        Counter,
        snapshots_sent_total,
        "snapshots_sent_total",
        "Snapshots sent to other stores."
    ),
    family!(
        Counter,
        snapshots_received_total,
        "snapshots_received_total",
        "Snapshots received and installed."
    ),
    family!(
        Counter,
        snapshots_failed_total,
        "snapshots_failed_total",
        "Snapshots that failed, sent or received."
    ),
    family!(
        Counter,
        raft_messages_sent_total,
        "raft_messages_sent_total",
        "Raft messages handed to the transport."
    ),
    family!(
        Counter,
        raft_messages_received_total,
        "raft_messages_received_total",
        "Raft messages received from the transport."
    ),
    family!(
        Counter,
        leader_changes_total,
        "leader_changes_total",
        "Leader changes observed by the store's peers."
    ),
    family!(Gauge, leaders, "leaders", "Regions led by this store."),
    family!(Gauge, regions, "regions", "Region peers on this store."),
    family!(
        Gauge,
        hibernating_regions,
        "hibernating_regions",
        "Region peers on this store that are hibernating."
    ),
    family!(
        Counter,
        ticks_total,
        "ticks_total",
        "Ticks of the store loop."
    ),
];

/// Prefix of every exposed metric name.
pub const METRIC_PREFIX: &str = "basalt_";

impl StoreMetrics {
    /// All metrics at zero.
    pub fn new() -> StoreMetrics {
        StoreMetrics::default()
    }

    /// Appends this store's metrics to `out` in the Prometheus text format 0.0.4, labelled
    /// `store="<store_id>"`. For several stores on one page use [`render_prometheus_all`].
    pub fn render_prometheus(&self, store_id: u64, out: &mut String) {
        render_prometheus_all(&[(store_id, self)], out);
    }
}

/// Appends the metrics of every store in `stores` to `out` in the Prometheus text format 0.0.4:
/// each family's `# HELP` and `# TYPE` once, then one sample (or one histogram series) per store.
pub fn render_prometheus_all(stores: &[(u64, &StoreMetrics)], out: &mut String) {
    for family in FAMILIES {
        let (name, kind) = (family.name, family.kind);
        // Writing into a String cannot fail.
        let _ = writeln!(out, "# HELP {METRIC_PREFIX}{name} {}", family.help);
        let _ = writeln!(out, "# TYPE {METRIC_PREFIX}{name} {kind}");
        for &(store_id, metrics) in stores {
            match (family.get)(metrics) {
                MetricRef::Counter(c) => {
                    let _ = writeln!(
                        out,
                        "{METRIC_PREFIX}{name}{{store=\"{store_id}\"}} {}",
                        c.get()
                    );
                }
                MetricRef::Gauge(g) => {
                    let _ = writeln!(
                        out,
                        "{METRIC_PREFIX}{name}{{store=\"{store_id}\"}} {}",
                        g.get()
                    );
                }
                MetricRef::Histogram(h) => render_histogram(name, store_id, &h.snapshot(), out),
            }
        }
    }
}

fn render_histogram(name: &str, store_id: u64, snap: &HistogramSnapshot, out: &mut String) {
    let mut cumulative = 0u64;
    for (i, &bound_ns) in HISTOGRAM_BOUNDS_NS.iter().enumerate() {
        cumulative += snap.buckets[i];
        let le = seconds_text(bound_ns);
        let _ = writeln!(
            out,
            "{METRIC_PREFIX}{name}_bucket{{store=\"{store_id}\",le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += snap.buckets[HISTOGRAM_BOUND_COUNT];
    let _ = writeln!(
        out,
        "{METRIC_PREFIX}{name}_bucket{{store=\"{store_id}\",le=\"+Inf\"}} {cumulative}"
    );
    let sum = seconds_text(snap.sum_ns);
    let _ = writeln!(
        out,
        "{METRIC_PREFIX}{name}_sum{{store=\"{store_id}\"}} {sum}"
    );
    let _ = writeln!(
        out,
        "{METRIC_PREFIX}{name}_count{{store=\"{store_id}\"}} {cumulative}"
    );
}

/// Exact decimal seconds of `ns` nanoseconds, without float rounding: `0.000075`, `2.5`, `10`.
fn seconds_text(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return secs.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{secs}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_gauge_count() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
        let g = Gauge::default();
        g.set(5);
        g.add(-7);
        assert_eq!(g.get(), -2);
    }

    #[test]
    fn bounds_rise_by_at_most_two() {
        for w in HISTOGRAM_BOUNDS_NS.windows(2) {
            assert!(w[1] > w[0] && w[1] <= 2 * w[0], "{w:?}");
        }
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = Histogram::default();
        h.record(Duration::from_micros(10)); // exactly the first bound
        h.record(Duration::from_nanos(10_001)); // just above: second bucket
        h.record(Duration::from_secs(11)); // overflow
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[HISTOGRAM_BOUND_COUNT], 1);
        assert_eq!(h.count(), 3);
        assert_eq!(
            h.sum(),
            Duration::from_nanos(10_000 + 10_001 + 11_000_000_000)
        );
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..90 {
            h.record(Duration::from_micros(400)); // bucket (300 µs, 500 µs]
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(40)); // bucket (30 ms, 50 ms]
        }
        let p50 = h.quantile(0.5).expect("non-empty");
        assert!(
            p50 > Duration::from_micros(300) && p50 <= Duration::from_micros(500),
            "{p50:?}"
        );
        let p99 = h.quantile(0.99).expect("non-empty");
        assert!(
            p99 > Duration::from_millis(30) && p99 <= Duration::from_millis(50),
            "{p99:?}"
        );
        let p0 = h.quantile(0.0).expect("non-empty");
        assert!(
            p0 > Duration::from_micros(300) && p0 <= Duration::from_micros(500),
            "{p0:?}"
        );
        h.record(Duration::from_secs(3600));
        assert_eq!(h.quantile(1.0), Some(Duration::from_secs(10)));
    }

    #[test]
    fn seconds_text_is_exact() {
        assert_eq!(seconds_text(10_000), "0.00001");
        assert_eq!(seconds_text(75_000), "0.000075");
        assert_eq!(seconds_text(2_500_000_000), "2.5");
        assert_eq!(seconds_text(10_000_000_000), "10");
        assert_eq!(seconds_text(0), "0");
    }

    /// A strict reader of the subset of the text format we emit. Checks every line's shape,
    /// HELP/TYPE once per family and before its samples, sample names belonging to the declared
    /// family, cumulative buckets ending in `+Inf` equal to `_count`. Returns (name, labels, value).
    fn parse_exposition(text: &str) -> Vec<(String, String, f64)> {
        use std::collections::{HashMap, HashSet};
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped = HashSet::new();
        let mut samples = Vec::new();
        assert!(text.ends_with('\n'), "text must end with a newline");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(!help.is_empty());
                assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                let old = types.insert(name.to_string(), kind.to_string());
                assert!(old.is_none(), "TYPE twice for {name}");
            } else {
                let (series, value) = line.rsplit_once(' ').expect("sample: series value");
                let (name, labels) = series.split_once('{').expect("labels");
                let labels = labels.strip_suffix('}').expect("closing brace");
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad name {name}"
                );
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').expect("label k=v");
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{pair}"
                    );
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
                    })
                    .unwrap_or(name);
                assert!(types.contains_key(family), "sample before TYPE: {line}");
                let value: f64 = value.parse().expect("numeric value");
                samples.push((name.to_string(), labels.to_string(), value));
            }
        }
        samples
    }

    #[test]
    fn exposition_parses_and_histograms_are_cumulative() {
        let a = StoreMetrics::new();
        a.proposals_total.add(7);
        a.leaders.set(3);
        a.commit_latency.record(Duration::from_micros(250));
        a.commit_latency.record(Duration::from_millis(2));
        a.commit_latency.record(Duration::from_secs(20));
        let b = StoreMetrics::new();
        b.ticks_total.add(9);
        let mut out = String::new();
        render_prometheus_all(&[(1, &a), (2, &b)], &mut out);
        let samples = parse_exposition(&out);

        let value = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .map(|s| s.2)
                .unwrap_or_else(|| panic!("missing {name}{{{labels}}}\n{out}"))
        };
        assert_eq!(value("basalt_proposals_total", "store=\"1\""), 7.0);
        assert_eq!(value("basalt_proposals_total", "store=\"2\""), 0.0);
        assert_eq!(value("basalt_ticks_total", "store=\"2\""), 9.0);
        assert_eq!(value("basalt_leaders", "store=\"1\""), 3.0);
        assert_eq!(
            value("basalt_commit_latency_seconds_count", "store=\"1\""),
            3.0
        );
        assert_eq!(
            value("basalt_commit_latency_seconds_sum", "store=\"1\""),
            20.00225
        );
        assert_eq!(
            value(
                "basalt_commit_latency_seconds_bucket",
                "store=\"1\",le=\"0.0003\""
            ),
            1.0
        );
        assert_eq!(
            value(
                "basalt_commit_latency_seconds_bucket",
                "store=\"1\",le=\"10\""
            ),
            2.0
        );
        assert_eq!(
            value(
                "basalt_commit_latency_seconds_bucket",
                "store=\"1\",le=\"+Inf\""
            ),
            3.0
        );

        // Buckets cumulative per store, every bound present.
        for store in ["1", "2"] {
            let prefix = format!("store=\"{store}\",le=");
            let buckets: Vec<f64> = samples
                .iter()
                .filter(|(n, l, _)| {
                    n == "basalt_log_write_latency_seconds_bucket" && l.starts_with(&prefix)
                })
                .map(|s| s.2)
                .collect();
            assert_eq!(buckets.len(), HISTOGRAM_BOUND_COUNT + 1);
            assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
        }
        let helps = out.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(helps, FAMILIES.len());
    }

    #[test]
    fn single_store_render_matches_all() {
        let m = StoreMetrics::new();
        m.regions.set(4);
        let mut one = String::new();
        m.render_prometheus(5, &mut one);
        let mut all = String::new();
        render_prometheus_all(&[(5, &m)], &mut all);
        assert_eq!(one, all);
        assert!(one.contains("basalt_regions{store=\"5\"} 4\n"));
    }
}
