//! The validated benchmark: every option checked against the others and against the device
//! (probed, not written) before the first byte of benchmark I/O. A bad value is an error naming
//! the option; nothing is clamped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::device::{self, DeviceKind};

use super::args::{BenchArgs, IoEngine, RwMode, Target};
use super::BenchError;

/// Largest `--iodepth` accepted: far above what any NVMe queue benefits from, and it bounds
/// the buffer pool allocated at open (`iodepth * bs`).
pub const IODEPTH_MAX: u32 = 4096;
/// Largest `--bs` accepted (fio's practical limit for one I/O; bounds the buffer pool too).
pub const BS_MAX_BYTES: u64 = 64 << 20;
/// Smallest logical block size of any device, used before a device exists to be probed.
const SECTOR_BYTES: u64 = 512;
/// Block size of a regular file created by the benchmark (the engine's default for files).
const FILE_BLOCK_BYTES: u64 = device::FILE_BLOCK_SIZE_BYTES as u64;
/// Most concurrent log writers: each is a thread on a 2-core machine, so more only measures
/// the scheduler.
pub const NUMJOBS_MAX: u32 = 1024;

/// A benchmark whose options have all been checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The options as given.
    pub args: BenchArgs,
    /// The I/O pattern (default read for the device target, as in fio; write for the log).
    pub rw: RwMode,
    /// Bytes of I/O to do before stopping (unless `--time_based`); a multiple of `--bs`.
    pub io_size_bytes: u64,
    /// Size the file is created or extended to (`None`: use the device as it is).
    pub create_size_bytes: Option<u64>,
    /// The device's logical block size: every offset and length is a multiple of it.
    pub logical_block_size_bytes: u64,
    /// Whether the file existed before the run (a new file has nothing to refuse).
    pub existed: bool,
}

impl Plan {
    /// Checks `args` and probes the device (stat and ioctls only).
    pub fn from_args(args: &BenchArgs) -> Result<Plan, BenchError> {
        check_ranges(args)?;
        let rw = resolve_rw(args)?;
        let probed = probe(&args.filename)?;
        let logical_block_size_bytes = probed.as_ref().map_or(FILE_BLOCK_BYTES, |p| p.block_bytes);
        let unit = match args.target {
            Target::Device => args.bs,
            Target::Log => logical_block_size_bytes,
        };
        if args.target == Target::Device && args.bs % logical_block_size_bytes != 0 {
            return Err(bad(
                "bs",
                format!(
                    "{} is not a multiple of the logical block size {} of {}",
                    args.bs,
                    logical_block_size_bytes,
                    args.filename.display()
                ),
            ));
        }
        let (io_size_bytes, create_size_bytes) = resolve_size(args, probed.as_ref(), unit)?;
        Ok(Plan {
            args: args.clone(),
            rw,
            io_size_bytes,
            create_size_bytes,
            logical_block_size_bytes,
            existed: probed.is_some(),
        })
    }

    /// What the benchmark drives.
    pub fn target(&self) -> Target {
        self.args.target
    }

    /// The device or file.
    pub fn path(&self) -> &Path {
        &self.args.filename
    }

    /// `--runtime`, if given.
    pub fn runtime(&self) -> Option<Duration> {
        self.args.runtime
    }

    /// The backend the options ask for.
    pub fn backend(&self) -> device::Backend {
        match self.args.ioengine {
            IoEngine::Uring => device::Backend::Uring,
            IoEngine::Sync => device::Backend::Sync,
        }
    }
}

fn bad(option: &'static str, reason: String) -> BenchError {
    BenchError::BadOption { option, reason }
}

/// Checks each option on its own and against the target, before looking at the device.
fn check_ranges(args: &BenchArgs) -> Result<(), BenchError> {
    if args.iodepth == 0 || args.iodepth > IODEPTH_MAX {
        return Err(bad(
            "iodepth",
            format!("{} is outside 1..={IODEPTH_MAX}", args.iodepth),
        ));
    }
    if args.bs == 0 || args.bs > BS_MAX_BYTES || args.bs % SECTOR_BYTES != 0 {
        return Err(bad(
            "bs",
            format!(
                "{} is not a multiple of {SECTOR_BYTES} in 512..={BS_MAX_BYTES}",
                args.bs
            ),
        ));
    }
    if args.direct > 1 {
        return Err(bad("direct", format!("{} is neither 0 nor 1", args.direct)));
    }
    if args.time_based && args.runtime.is_none() {
        return Err(bad("time_based", "needs --runtime".to_string()));
    }
    if args.runtime == Some(Duration::ZERO) {
        return Err(bad("runtime", "must be more than 0".to_string()));
    }
    if args.numjobs == 0 || args.numjobs > NUMJOBS_MAX {
        return Err(bad(
            "numjobs",
            format!("{} is outside 1..={NUMJOBS_MAX}", args.numjobs),
        ));
    }
    match args.target {
        Target::Device => check_device_only(args),
        Target::Log => check_log_only(args),
    }
}

fn check_device_only(args: &BenchArgs) -> Result<(), BenchError> {
    if args.numjobs != 1 {
        return Err(bad(
            "numjobs",
            "only --target=log runs several jobs".to_string(),
        ));
    }
    if args.recover {
        return Err(bad(
            "recover",
            "only --target=log has a recovery to measure".to_string(),
        ));
    }
    Ok(())
}

fn check_log_only(args: &BenchArgs) -> Result<(), BenchError> {
    if args.regions == 0 {
        return Err(bad("regions", "must be at least 1".to_string()));
    }
    if args.entry_size == 0 || args.entry_size > BS_MAX_BYTES {
        return Err(bad(
            "entry-size",
            format!("{} is outside 1..={BS_MAX_BYTES}", args.entry_size),
        ));
    }
    if args.entries_per_write == 0 {
        return Err(bad("entries-per-write", "must be at least 1".to_string()));
    }
    if args.numjobs > args.regions {
        return Err(bad(
            "numjobs",
            format!(
                "{} writers need at least as many --regions (got {}): each writer owns its regions",
                args.numjobs, args.regions
            ),
        ));
    }
    if args.fdatasync != 0 {
        return Err(bad(
            "fdatasync",
            "the log flushes every append itself".to_string(),
        ));
    }
    if args.iodepth != 1 {
        return Err(bad(
            "iodepth",
            "the log keeps its own queue; use --numjobs".to_string(),
        ));
    }
    if args.direct != 1 {
        return Err(bad(
            "direct",
            "the log always writes with O_DIRECT".to_string(),
        ));
    }
    Ok(())
}

fn resolve_rw(args: &BenchArgs) -> Result<RwMode, BenchError> {
    match (args.target, args.rw) {
        (Target::Device, rw) => Ok(rw.unwrap_or(RwMode::Read)),
        (Target::Log, None | Some(RwMode::Write)) => Ok(RwMode::Write),
        (Target::Log, Some(other)) => Err(bad(
            "rw",
            format!(
                "{} does not apply to --target=log, which only appends",
                other.name()
            ),
        )),
    }
}

/// What a probe of an existing device or file found.
struct Probed {
    block_bytes: u64,
    size_bytes: u64,
    is_block_device: bool,
}

fn probe(path: &PathBuf) -> Result<Option<Probed>, BenchError> {
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BenchError::Os {
                what: "cannot stat",
                path: path.clone(),
                source,
            })
        }
        Ok(_) => {}
    }
    let info = match device::probe(path) {
        // A regular file too small for the engine yet: `--size` may extend it (checked later).
        Err(device::DeviceError::TooSmall { size, .. })
            if std::fs::metadata(path).is_ok_and(|m| m.is_file()) =>
        {
            return Ok(Some(Probed {
                block_bytes: FILE_BLOCK_BYTES,
                size_bytes: size,
                is_block_device: false,
            }))
        }
        other => other?,
    };
    Ok(Some(Probed {
        block_bytes: u64::from(info.logical_block_size),
        size_bytes: info.size_bytes,
        is_block_device: matches!(info.kind, DeviceKind::BlockDevice),
    }))
}

/// Works out how much I/O to do and whether the file must be created or extended.
fn resolve_size(
    args: &BenchArgs,
    probed: Option<&Probed>,
    unit: u64,
) -> Result<(u64, Option<u64>), BenchError> {
    let (size, create) = match (args.size, probed) {
        (None, None) => {
            return Err(bad(
                "size",
                format!(
                    "{} does not exist: give --size to create it",
                    args.filename.display()
                ),
            ))
        }
        (None, Some(p)) => (p.size_bytes, None),
        (Some(size), Some(p)) if p.is_block_device && size > p.size_bytes => {
            return Err(bad(
                "size",
                format!(
                    "{size} is more than the {} bytes of the device",
                    p.size_bytes
                ),
            ))
        }
        (Some(size), Some(p)) if p.is_block_device => (size, None),
        (Some(size), Some(p)) if size <= p.size_bytes => (size, None),
        (Some(size), _) => (size, Some(size)),
    };
    let io_size_bytes = size - size % unit;
    if io_size_bytes == 0 {
        return Err(bad(
            "size",
            format!("{size} is less than one block of {unit} bytes"),
        ));
    }
    Ok((io_size_bytes, create.map(|s| s - s % unit)))
}
