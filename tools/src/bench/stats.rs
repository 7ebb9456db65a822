//! Measurements of one run: per-direction operation counts, bytes and a latency histogram
//! (hdrhistogram, nanoseconds, 3 significant digits), and the CPU time the process used.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The percentiles reported, as in fio's default `percentile_list`.
pub const PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// Largest latency the histograms hold (one hour); longer ones count as one hour.
pub const LATENCY_NS_MAX: u64 = 3_600 * 1_000_000_000;

/// Operations of one kind (reads, writes or flushes): how many, how many bytes, how long each.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Operations completed.
    pub ops_count: u64,
    /// Bytes transferred by them (payload bytes for log appends).
    pub bytes: u64,
    /// Latency of each, submit to completion, in nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats::new()
    }
}

impl OpStats {
    /// No operations yet.
    pub fn new() -> OpStats {
        // Fixed bounds (1 ns .. LATENCY_NS_MAX, 3 digits), valid by construction; longer
        // latencies are clamped to the top bucket.
        let latency_ns = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
            .expect("1..LATENCY_NS_MAX with 3 significant digits is a valid histogram");
        OpStats {
            ops_count: 0,
            bytes: 0,
            latency_ns,
        }
    }

    /// Records one operation.
    pub fn record(&mut self, bytes: u64, latency: Duration) {
        self.ops_count += 1;
        self.bytes += bytes;
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency_ns.saturating_record(ns);
    }

    /// Adds another job's operations to these.
    pub fn merge(&mut self, other: &OpStats) {
        self.ops_count += other.ops_count;
        self.bytes += other.bytes;
        // Same bounds on both sides, so adding cannot fail on range.
        let _ = self.latency_ns.add(&other.latency_ns);
    }

    /// Latency at `percentile` (0..=100) in nanoseconds; 0 when nothing was recorded.
    pub fn percentile_ns(&self, percentile: f64) -> u64 {
        if self.ops_count == 0 {
            return 0;
        }
        self.latency_ns.value_at_percentile(percentile)
    }

    /// Operations per second over `elapsed`.
    pub fn per_second(&self, elapsed: Duration) -> f64 {
        rate(self.ops_count, elapsed)
    }
}

/// `count / elapsed`, 0 for an empty interval.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// User and system CPU time of the whole process (every thread), from `getrusage`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// User-mode CPU time.
    pub user: Duration,
    /// Kernel-mode CPU time.
    pub sys: Duration,
}

impl CpuTimes {
    /// The process's CPU time so far (zero if `getrusage` fails, which it cannot for SELF).
    pub fn now() -> CpuTimes {
        use nix::sys::resource::{getrusage, UsageWho};
        match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(usage) => CpuTimes {
                user: timeval_duration(usage.user_time()),
                sys: timeval_duration(usage.system_time()),
            },
            Err(_) => CpuTimes::default(),
        }
    }

    /// CPU time spent since `earlier`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

fn timeval_duration(tv: nix::sys::time::TimeVal) -> Duration {
    let secs = u64::try_from(tv.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// What the log target measured beyond the appends themselves.
#[derive(Debug, Clone, Default)]
pub struct LogMeasure {
    /// Entries appended and acknowledged durable.
    pub entries_count: u64,
    /// Device writes the log issued (one per group commit), when the log reports it.
    pub device_writes_count: Option<u64>,
    /// Bytes the log wrote to the device (headers and padding included), when reported.
    pub device_write_bytes: Option<u64>,
    /// The recovery scan, when `--recover` was given: bytes scanned and time taken.
    pub recovery: Option<(u64, Duration)>,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Reads.
    pub read: OpStats,
    /// Writes (log appends for the log target).
    pub write: OpStats,
    /// Flushes issued by `--fdatasync`.
    pub sync: OpStats,
    /// CPU used during the measured phase.
    pub cpu: CpuTimes,
    /// The backend that actually ran (`uring`, `sync`).
    pub backend_name: &'static str,
    /// The device as opened.
    pub device: DeviceRecord,
    /// Log-target figures.
    pub log: Option<LogMeasure>,
}

/// The device as the engine saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRecord {
    /// Path given with `--filename`.
    pub path: String,
    /// `block_device` or `regular_file`.
    pub kind: &'static str,
    /// Logical block size.
    pub logical_block_size_bytes: u64,
    /// Capacity.
    pub size_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut stats = OpStats::new();
        for micros in 1..=100u64 {
            stats.record(4096, Duration::from_micros(micros));
        }
        assert_eq!(stats.ops_count, 100);
        assert_eq!(stats.bytes, 409_600);
        let p50 = stats.percentile_ns(50.0);
        assert!((49_900..=50_100).contains(&p50), "p50 {p50}");
        let max = stats.latency_ns.max();
        assert!((99_900..=100_100).contains(&max), "max {max}");
        assert_eq!(stats.per_second(Duration::from_secs(2)), 50.0);
    }

    #[test]
    fn merging_adds_counts_and_latencies() {
        let mut a = OpStats::new();
        let mut b = OpStats::new();
        a.record(10, Duration::from_micros(5));
        b.record(20, Duration::from_micros(500));
        a.merge(&b);
        assert_eq!((a.ops_count, a.bytes), (2, 30));
        assert!(a.latency_ns.max() >= 499_000);
    }
}
