//! The command line of `basalt-bench`, spelled the way fio spells it (`--rw=randwrite --bs=4k
//! --iodepth=32 --time_based --runtime=5`), parsed by clap. Values are only parsed here; checks
//! that need the device (alignment, size) happen in [`super::plan`], still before any I/O.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What the benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Raw I/O through Basalt's own backends (`engine::device::open`).
    Device,
    /// The engine's append-only Raft log: synced appends of entries of many regions.
    Log,
}

/// The I/O pattern (fio's `--rw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RwMode {
    /// Sequential writes.
    Write,
    /// Random writes, each block once per pass.
    Randwrite,
    /// Sequential reads.
    Read,
    /// Random reads, each block once per pass.
    Randread,
}

impl RwMode {
    /// True for the two write patterns.
    pub fn is_write(self) -> bool {
        matches!(self, RwMode::Write | RwMode::Randwrite)
    }

    /// True for the two random patterns.
    pub fn is_random(self) -> bool {
        matches!(self, RwMode::Randwrite | RwMode::Randread)
    }

    /// fio's name of the pattern.
    pub fn name(self) -> &'static str {
        match self {
            RwMode::Write => "write",
            RwMode::Randwrite => "randwrite",
            RwMode::Read => "read",
            RwMode::Randread => "randread",
        }
    }
}

/// The I/O backend (fio's `--ioengine`; fio's own names are accepted as aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoEngine {
    /// io_uring on an `O_DIRECT` descriptor.
    #[value(alias = "io_uring")]
    Uring,
    /// `pread`/`pwrite`/`fdatasync`.
    #[value(alias = "psync")]
    Sync,
}

/// How the results are printed (fio's `--output-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable summary (fio's default layout, abridged).
    Normal,
    /// fio's JSON layout plus a `basalt` block with unit-suffixed keys.
    Json,
}

/// `basalt-bench`: fio-style benchmark of Basalt's device layer and Raft log.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "basalt-bench",
    version,
    about = "fio-style benchmark of Basalt's device layer (--target=device) and Raft log (--target=log)"
)]
pub struct BenchArgs {
    /// What to benchmark: `device` (raw I/O) or `log` (the engine's Raft log).
    #[arg(long, value_enum, default_value = "device")]
    pub target: Target,
    /// Job name, printed and recorded in the JSON output.
    #[arg(long, default_value = "basalt-bench")]
    pub name: String,
    /// Device or regular file; a missing regular file is created with `--size`.
    #[arg(long)]
    pub filename: PathBuf,
    /// I/O pattern (device target; the log only appends). Default: read, as in fio.
    #[arg(long, value_enum)]
    pub rw: Option<RwMode>,
    /// Block size of each I/O (k/m/g suffixes, powers of 1024 as in fio).
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    pub bs: u64,
    /// Bytes of I/O to do (payload bytes for the log), and the size a file is created or
    /// extended to (default: the device or file size).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Operations kept in flight.
    #[arg(long, default_value_t = 1)]
    pub iodepth: u32,
    /// Issue a flush (fdatasync) after every N writes; 0 = never.
    #[arg(long, default_value_t = 0)]
    pub fdatasync: u64,
    /// 1 = `O_DIRECT` (no page cache), 0 = buffered.
    #[arg(long, default_value_t = 1)]
    pub direct: u8,
    /// I/O backend.
    #[arg(long, value_enum, default_value = "uring")]
    pub ioengine: IoEngine,
    /// Stop after this long (`5`, `5s`, `500ms`, `2m`).
    #[arg(long, value_parser = parse_duration)]
    pub runtime: Option<Duration>,
    /// Keep going for the whole `--runtime`, wrapping around `--size`.
    #[arg(long = "time_based")]
    pub time_based: bool,
    /// Output format.
    #[arg(long = "output-format", value_enum, default_value = "normal")]
    pub output_format: OutputFormat,
    /// Write even if the device holds a filesystem or a Basalt store.
    #[arg(long)]
    pub force: bool,
    /// Log target: number of regions whose entries are appended.
    #[arg(long, default_value_t = 1)]
    pub regions: u32,
    /// Log target: payload bytes of each entry (k/m suffixes).
    #[arg(long = "entry-size", default_value = "256", value_parser = parse_size)]
    pub entry_size: u64,
    /// Log target: entries in each append (one device write and one flush).
    #[arg(long = "entries-per-write", default_value_t = 1)]
    pub entries_per_write: u32,
    /// Log target: concurrent writers, each appending and waiting for durability.
    #[arg(long, default_value_t = 1)]
    pub numjobs: u32,
    /// Log target: reopen the log after the run and report the recovery scan rate.
    #[arg(long)]
    pub recover: bool,
}

/// Splits fio-style `text` into its leading decimal number and its (lower-cased) unit suffix;
/// None when there is no number.
fn split_number(text: &str) -> Option<(u64, String)> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, suffix) = lower.split_at(digits_end);
    Some((digits.parse().ok()?, suffix.to_string()))
}

/// Parses a size as fio does: a number with an optional k/m/g/t suffix (powers of 1024;
/// `KiB`, `kb` and `k` all mean 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, suffix) = split_number(text)
        .ok_or_else(|| format!("`{text}` is not a size (examples: 4096, 4k, 1m, 2g)"))?;
    let shift = match suffix.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown size suffix `{suffix}` (use k, m, g or t)"
            ))
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a duration as fio does: seconds by default, or with an `ms`/`s`/`m`/`h` suffix.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, suffix) = split_number(text)
        .ok_or_else(|| format!("`{text}` is not a duration (examples: 5, 5s, 500ms, 2m)"))?;
    let millis_per_unit = match suffix.as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "`{text}`: unknown time suffix `{suffix}` (use ms, s, m or h)"
            ))
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("4x").is_err());
        assert!(parse_size("k").is_err());
    }

    #[test]
    fn durations_default_to_seconds() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5y").is_err());
    }
}
