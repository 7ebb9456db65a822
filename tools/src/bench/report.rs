//! The report of a run: fio's JSON layout where it fits (`jobs[].write.iops`, `bw` in KiB/s,
//! `clat_ns.percentile."99.000000"`), a `basalt` block per job whose keys carry their units
//! (`latency_us_p99`, `bandwidth_mib_s`, `entries_per_s`, `cpu_user_s`), and a top-level
//! `basalt` record of the device, kernel, backend and options.

use std::time::Duration;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::args::{IoEngine, Target};
use super::host::HostRecord;
use super::plan::Plan;
use super::stats::{rate, DeviceRecord, OpStats, RunResult, PERCENTILES};

const MIB: f64 = (1u64 << 20) as f64;

/// The whole report, serialised as the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Version of the tool (fio has `fio version`).
    #[serde(rename = "basalt-bench version")]
    pub version: &'static str,
    /// Start of the run, seconds since the Unix epoch (as fio's `timestamp`).
    pub timestamp: u64,
    /// One job (fio layout).
    pub jobs: Vec<JobReport>,
    /// Where and how the run happened.
    pub basalt: RunRecord,
}

/// One job in fio's layout.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// `--name`.
    pub jobname: String,
    /// Always 0 (one group).
    pub groupid: u32,
    /// Always 0: a failed run is an error, not a report.
    pub error: u32,
    /// Wall time of the measured phase in milliseconds.
    pub job_runtime: u64,
    /// User CPU as a percentage of the wall time (fio's `usr_cpu`).
    pub usr_cpu: f64,
    /// System CPU as a percentage of the wall time (fio's `sys_cpu`).
    pub sys_cpu: f64,
    /// Reads.
    pub read: DirectionReport,
    /// Writes (log appends for the log target).
    pub write: DirectionReport,
    /// Flushes from `--fdatasync`.
    pub sync: SyncReport,
    /// The same figures with unit-suffixed keys, plus the log's own.
    pub basalt: BasaltJobReport,
}

/// fio's per-direction block.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionReport {
    /// Bytes transferred.
    pub io_bytes: u64,
    /// Bytes transferred / 1024.
    pub io_kbytes: u64,
    /// Bandwidth in bytes/s.
    pub bw_bytes: u64,
    /// Bandwidth in KiB/s (fio's unit for `bw`).
    pub bw: u64,
    /// Operations per second.
    pub iops: f64,
    /// Wall time in milliseconds.
    pub runtime: u64,
    /// Operations completed.
    pub total_ios: u64,
    /// Completion latency (submit to completion; fio's clat).
    pub clat_ns: LatencyReport,
    /// Total latency: the same as clat here, as submission never blocks.
    pub lat_ns: LatencyReport,
}

/// fio's `sync` block.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// Flushes completed.
    pub total_ios: u64,
    /// Flush latency.
    pub lat_ns: LatencyReport,
}

/// fio's latency summary, in nanoseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// Smallest.
    pub min: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Samples.
    #[serde(rename = "N")]
    pub n: u64,
    /// Percentiles keyed as fio keys them (`"99.900000"`), in increasing order.
    #[serde(serialize_with = "serialize_percentiles")]
    pub percentile: Vec<(f64, u64)>,
}

fn serialize_percentiles<S: Serializer>(values: &[(f64, u64)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(values.len()))?;
    for (p, v) in values {
        map.serialize_entry(&format!("{p:.6}"), v)?;
    }
    map.end()
}

/// Basalt's figures of one job; every key names its unit.
#[derive(Debug, Clone, Serialize)]
pub struct BasaltJobReport {
    /// `device` or `log`.
    pub target: &'static str,
    /// The measured operation: `read`, `write` or `append`.
    pub op: &'static str,
    /// Operations completed.
    pub ops_count: u64,
    /// Bytes transferred (payload bytes for the log).
    pub io_bytes: u64,
    /// Wall time of the measured phase.
    pub runtime_s: f64,
    /// Operations per second.
    pub iops: f64,
    /// Bandwidth.
    pub bandwidth_mib_s: f64,
    /// Latency percentiles of the operation.
    pub latency_us_p50: f64,
    /// 90th percentile.
    pub latency_us_p90: f64,
    /// 99th percentile.
    pub latency_us_p99: f64,
    /// 99.9th percentile.
    pub latency_us_p99_9: f64,
    /// Largest.
    pub latency_us_max: f64,
    /// Mean.
    pub latency_us_mean: f64,
    /// Flushes issued by `--fdatasync`.
    pub flushes_count: u64,
    /// Median flush latency.
    pub flush_latency_us_p50: f64,
    /// 99th percentile flush latency.
    pub flush_latency_us_p99: f64,
    /// User CPU of the whole process during the run.
    pub cpu_user_s: f64,
    /// System CPU of the whole process during the run.
    pub cpu_sys_s: f64,
    /// CPU (user + system) per operation.
    pub cpu_us_per_op: f64,
    /// Log target: entries appended and durable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries_count: Option<u64>,
    /// Log target: entries per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries_per_s: Option<f64>,
    /// Log target: CPU (user + system) per entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_entry: Option<f64>,
    /// Log target: device writes (group commits) per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_writes_per_s: Option<f64>,
    /// Log target: mean bytes of one device write (headers and padding included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_write_bytes_mean: Option<f64>,
    /// Log target with `--recover`: bytes of log scanned by recovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_scanned_bytes: Option<u64>,
    /// Log target with `--recover`: time to reopen the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_s: Option<f64>,
    /// Log target with `--recover`: scan rate, 10^9 bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_gb_s: Option<f64>,
}

/// Where and how the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// The device as opened.
    pub device: DeviceRecord,
    /// Kernel and machine.
    pub kernel: HostRecord,
    /// The backend that ran (`uring` or `sync`; `sync` also when io_uring was refused).
    pub backend: &'static str,
    /// The options, after defaults.
    pub options: OptionsRecord,
}

/// The options of a run, after defaults; sizes in bytes.
#[derive(Debug, Clone, Serialize)]
pub struct OptionsRecord {
    /// `--target`.
    pub target: &'static str,
    /// `--rw`.
    pub rw: &'static str,
    /// `--bs`.
    pub bs_bytes: u64,
    /// Bytes of I/O to do (`--size`, rounded down to whole blocks).
    pub size_bytes: u64,
    /// `--iodepth`.
    pub iodepth: u32,
    /// `--fdatasync` (writes per flush; 0 = none).
    pub fdatasync_writes: u64,
    /// `--direct`.
    pub direct: bool,
    /// `--ioengine` as asked.
    pub ioengine: &'static str,
    /// `--runtime`.
    pub runtime_s: Option<f64>,
    /// `--time_based`.
    pub time_based: bool,
    /// `--regions` (log).
    pub regions: u32,
    /// `--entry-size` (log).
    pub entry_size_bytes: u64,
    /// `--entries-per-write` (log).
    pub entries_per_write: u32,
    /// `--numjobs`.
    pub numjobs: u32,
    /// `--recover`.
    pub recover: bool,
    /// `--force`.
    pub force: bool,
}

impl Report {
    /// Builds the report of `result`.
    pub fn new(plan: &Plan, host: HostRecord, result: RunResult) -> Report {
        let timestamp = host.timestamp_s;
        let basalt = RunRecord {
            device: result.device.clone(),
            kernel: host,
            backend: result.backend_name,
            options: OptionsRecord::new(plan),
        };
        let job = JobReport::new(plan, &result);
        Report {
            version: env!("CARGO_PKG_VERSION"),
            timestamp,
            jobs: vec![job],
            basalt,
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of numbers and strings into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl LatencyReport {
    fn new(stats: &OpStats) -> LatencyReport {
        let h = &stats.latency_ns;
        let empty = stats.ops_count == 0;
        LatencyReport {
            min: if empty { 0 } else { h.min() },
            max: if empty { 0 } else { h.max() },
            mean: if empty { 0.0 } else { h.mean() },
            stddev: if empty { 0.0 } else { h.stdev() },
            n: stats.ops_count,
            percentile: PERCENTILES
                .iter()
                .map(|&p| (p, stats.percentile_ns(p)))
                .collect(),
        }
    }
}

impl DirectionReport {
    fn new(stats: &OpStats, elapsed: Duration) -> DirectionReport {
        let bw_bytes = rate(stats.bytes, elapsed) as u64;
        let clat = LatencyReport::new(stats);
        DirectionReport {
            io_bytes: stats.bytes,
            io_kbytes: stats.bytes / 1024,
            bw_bytes,
            bw: bw_bytes / 1024,
            iops: stats.per_second(elapsed),
            runtime: if stats.ops_count > 0 {
                elapsed.as_millis() as u64
            } else {
                0
            },
            total_ios: stats.ops_count,
            lat_ns: clat.clone(),
            clat_ns: clat,
        }
    }
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1e3
}

impl JobReport {
    fn new(plan: &Plan, result: &RunResult) -> JobReport {
        let elapsed = result.elapsed;
        let wall_s = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        JobReport {
            jobname: plan.args.name.clone(),
            groupid: 0,
            error: 0,
            job_runtime: elapsed.as_millis() as u64,
            usr_cpu: 100.0 * result.cpu.user.as_secs_f64() / wall_s,
            sys_cpu: 100.0 * result.cpu.sys.as_secs_f64() / wall_s,
            read: DirectionReport::new(&result.read, elapsed),
            write: DirectionReport::new(&result.write, elapsed),
            sync: SyncReport {
                total_ios: result.sync.ops_count,
                lat_ns: LatencyReport::new(&result.sync),
            },
            basalt: BasaltJobReport::new(plan, result),
        }
    }
}

impl BasaltJobReport {
    fn new(plan: &Plan, result: &RunResult) -> BasaltJobReport {
        let (op, stats) = match (plan.target(), plan.rw.is_write()) {
            (Target::Log, _) => ("append", &result.write),
            (_, true) => ("write", &result.write),
            (_, false) => ("read", &result.read),
        };
        let elapsed = result.elapsed;
        let cpu_us = (result.cpu.user + result.cpu.sys).as_secs_f64() * 1e6;
        let per = |count: u64| {
            if count > 0 {
                cpu_us / count as f64
            } else {
                0.0
            }
        };
        let log = result.log.as_ref();
        let entries = log.map(|l| l.entries_count);
        let writes = log.and_then(|l| l.device_writes_count);
        let recovery = log.and_then(|l| l.recovery);
        BasaltJobReport {
            target: if plan.target() == Target::Log {
                "log"
            } else {
                "device"
            },
            op,
            ops_count: stats.ops_count,
            io_bytes: stats.bytes,
            runtime_s: elapsed.as_secs_f64(),
            iops: stats.per_second(elapsed),
            bandwidth_mib_s: rate(stats.bytes, elapsed) / MIB,
            latency_us_p50: micros(stats.percentile_ns(50.0)),
            latency_us_p90: micros(stats.percentile_ns(90.0)),
            latency_us_p99: micros(stats.percentile_ns(99.0)),
            latency_us_p99_9: micros(stats.percentile_ns(99.9)),
            latency_us_max: micros(stats.percentile_ns(100.0)),
            latency_us_mean: if stats.ops_count > 0 {
                stats.latency_ns.mean() / 1e3
            } else {
                0.0
            },
            flushes_count: result.sync.ops_count,
            flush_latency_us_p50: micros(result.sync.percentile_ns(50.0)),
            flush_latency_us_p99: micros(result.sync.percentile_ns(99.0)),
            cpu_user_s: result.cpu.user.as_secs_f64(),
            cpu_sys_s: result.cpu.sys.as_secs_f64(),
            cpu_us_per_op: per(stats.ops_count),
            entries_count: entries,
            entries_per_s: entries.map(|n| rate(n, elapsed)),
            cpu_us_per_entry: entries.map(per),
            device_writes_per_s: writes.map(|n| rate(n, elapsed)),
            device_write_bytes_mean: log.and_then(|l| match (l.device_write_bytes, writes) {
                (Some(bytes), Some(n)) if n > 0 => Some(bytes as f64 / n as f64),
                _ => None,
            }),
            recovery_scanned_bytes: recovery.map(|(bytes, _)| bytes),
            recovery_s: recovery.map(|(_, t)| t.as_secs_f64()),
            recovery_gb_s: recovery.map(|(bytes, t)| rate(bytes, t) / 1e9),
        }
    }
}

impl OptionsRecord {
    fn new(plan: &Plan) -> OptionsRecord {
        let a = &plan.args;
        OptionsRecord {
            target: if a.target == Target::Log {
                "log"
            } else {
                "device"
            },
            rw: plan.rw.name(),
            bs_bytes: a.bs,
            size_bytes: plan.io_size_bytes,
            iodepth: a.iodepth,
            fdatasync_writes: a.fdatasync,
            direct: a.direct == 1,
            ioengine: match a.ioengine {
                IoEngine::Uring => "uring",
                IoEngine::Sync => "sync",
            },
            runtime_s: a.runtime.map(|d| d.as_secs_f64()),
            time_based: a.time_based,
            regions: a.regions,
            entry_size_bytes: a.entry_size,
            entries_per_write: a.entries_per_write,
            numjobs: a.numjobs,
            recover: a.recover,
            force: a.force,
        }
    }
}
