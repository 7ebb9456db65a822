//! `basalt-bench`: a fio-style benchmark of Basalt's device layer and of the engine's Raft log.
//!
//! Two targets: `device` drives `engine::device::open` directly (fio's `--rw`, `--bs`,
//! `--iodepth`, `--fdatasync`, keeping `iodepth` operations in flight through the completion
//! interface); `log` appends entries of many regions to the engine's append-only log and waits
//! for each append to be durable (group commit across `--numjobs` writers). Every option is
//! checked before the first byte of benchmark I/O ([`plan`]); a device that holds a filesystem or
//! a Basalt store is refused unless `--force`. Results come as fio's text or JSON layout, plus a
//! `basalt` block whose keys carry their units ([`report`]).
//!
//! It never asserts a performance target: figures are reported, the comparison with fio is done
//! by `benches/fio_compare.sh`.

pub mod args;
mod counting_io;
mod device_run;
pub mod host;
mod log_regions;
mod log_run;
mod offsets;
pub mod plan;
mod progress;
pub mod report;
pub mod signature;
pub mod stats;
mod text;

use std::path::PathBuf;

pub use args::BenchArgs;
pub use plan::Plan;
pub use report::Report;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An option has a value the benchmark cannot run with; detected before any I/O.
    #[error("invalid --{option}: {reason}")]
    BadOption {
        /// The option's name as typed, without the dashes (`bs`, `iodepth`).
        option: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The device holds data that the benchmark would destroy.
    #[error("refusing to write {path}: it holds {what}; pass --force to overwrite it")]
    Refused {
        /// The device or file.
        path: PathBuf,
        /// What was found (`an ext4 filesystem`, `a Basalt store`).
        what: String,
    },
    /// Opening or probing the device failed.
    #[error(transparent)]
    Device(#[from] engine::device::DeviceError),
    /// A benchmark I/O failed.
    #[error("benchmark I/O on {path} failed: {source}")]
    Io {
        /// The device or file.
        path: PathBuf,
        /// The backend's error.
        source: engine::io::IoError,
    },
    /// The engine's log refused or failed (format, open, append, recovery).
    #[error("log on {path}: {source}")]
    Log {
        /// The device or file.
        path: PathBuf,
        /// The engine's error.
        source: engine::error::EngineError,
    },
    /// An operating-system call outside the I/O backends failed (creating the file, reading its
    /// first blocks for the signature check).
    #[error("{what} {path}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The device or file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Validates `args`, runs the benchmark they describe, and returns its report.
pub fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let plan = Plan::from_args(args)?;
    signature::check_writable(&plan)?;
    let host = host::HostRecord::collect();
    let result = match plan.target() {
        args::Target::Device => device_run::run(&plan)?,
        args::Target::Log => log_run::run(&plan)?,
    };
    Ok(Report::new(&plan, host, result))
}
