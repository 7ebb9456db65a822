//! Opening the store's device: a raw block device, or a regular file (the embedded default).
//!
//! [`probe`] reads the shape of a path without opening it for writing; [`open`] opens it for
//! direct I/O and wraps it in an [`Io`] backend. Block devices are sized with `BLKGETSIZE64`,
//! their logical block size read with `BLKSSZGET`, and they are opened `O_EXCL` so that a mounted
//! device or one used by another store is refused (`DeviceError::Busy`, after retrying for
//! 100 ms: the kernel also claims a device briefly while another process tries to configure it). Regular files use a
//! block size of 4096 bytes, or the file system's direct-I/O offset alignment (`statx`
//! `STATX_DIOALIGN`) when that is larger. Every failure is a [`DeviceError`] naming the path.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::io::sync::SyncIo;
use crate::io::uring::{DurableMode, UringIo};
use crate::io::{BufPool, Geometry, Io, IoError};

pub use crate::io::sim;

/// Smallest device accepted by [`probe`] and [`open`].
pub const DEVICE_SIZE_MIN_BYTES: u64 = 1 << 20;
/// Block size used for regular files (the page size and the usual file-system block size:
/// smaller direct writes make ext4/xfs serialise or read-modify-write).
pub const FILE_BLOCK_SIZE_BYTES: u32 = 4096;
const BLOCK_SIZE_MIN: u32 = 512;
const BLOCK_SIZE_MAX: u32 = 64 * 1024;

/// What kind of object the path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A block device (`/dev/nvme0n1`, `/dev/loop3`).
    BlockDevice,
    /// A regular file.
    RegularFile,
}

/// The shape of a device, as found by [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The path probed.
    pub path: PathBuf,
    /// Block device or regular file.
    pub kind: DeviceKind,
    /// Logical block size in bytes (alignment of every I/O).
    pub logical_block_size: u32,
    /// Size in bytes, rounded down to a multiple of the block size.
    pub size_bytes: u64,
}

impl DeviceInfo {
    /// The geometry an [`Io`] backend on this device reports.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            block_size: self.logical_block_size,
            capacity_bytes: self.size_bytes,
        }
    }
}

/// Which I/O backend [`open`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring; an error if the kernel refuses it.
    Uring,
    /// `pread`/`pwrite`/`fdatasync`.
    Sync,
    /// io_uring, falling back to `Sync` (with one warning) when the kernel refuses io_uring.
    Auto,
}

/// Options for [`open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Backend to use. Default `Auto`: the fast path wherever the kernel allows it.
    pub backend: Backend,
    /// Open with `O_DIRECT`. Default true: the engine does its own caching and must see device
    /// errors at write time; false only for file systems without direct I/O (tmpfs).
    pub direct: bool,
    /// Most operations in flight. Default 128: deep enough for NVMe, small ring memory.
    pub queue_depth: usize,
    /// Size of each pool buffer. Default 256 KiB: the largest single log write we expect.
    pub pool_slot_size_bytes: usize,
    /// Number of pool buffers. Default 32: 8 MiB pinned, within the usual `RLIMIT_MEMLOCK`.
    pub pool_slot_count: usize,
    /// Regular files only: create the file if missing and extend it to this size if smaller
    /// (never shrinks); with `direct` the added range is written with zeros (see
    /// `create_or_extend`). Default `None`: the file must exist.
    pub create_size_bytes: Option<u64>,
    /// Block devices only: open with `O_EXCL` (refused while mounted or claimed by another
    /// exclusive opener). Default true. The store's second and third handles (the state store's
    /// writer and reader, see [`open_store`]) are opened without it: the first handle already
    /// holds the claim for the process.
    pub exclusive: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            backend: Backend::Auto,
            direct: true,
            queue_depth: 128,
            pool_slot_size_bytes: 256 * 1024,
            pool_slot_count: 32,
            create_size_bytes: None,
            exclusive: true,
        }
    }
}

/// The device handles of one store: the log writer's, and the state store's writer and reader
/// (each its own file descriptor and ring, so a value read never waits behind a log flush).
pub struct StoreHandles {
    /// The log writer's handle (opened first, exclusively).
    pub log: Box<dyn Io>,
    /// The state store's writes (non-durable; flushed by checkpoints).
    pub state_write: Box<dyn Io>,
    /// The state store's reads (gets, scans, snapshot builds).
    pub state_read: Box<dyn Io>,
    /// What was probed.
    pub info: DeviceInfo,
}

/// Opens the three handles of a store on `path`: the first with `opts` (exclusive on a block
/// device), the state store's two without `O_EXCL`, smaller buffer pools, and the same backend.
pub fn open_store(path: &Path, opts: &OpenOptions) -> Result<StoreHandles, DeviceError> {
    let (log, info) = open(path, opts)?;
    let second = OpenOptions {
        exclusive: false,
        create_size_bytes: None,
        pool_slot_count: opts.pool_slot_count.div_ceil(4).max(2),
        ..opts.clone()
    };
    let (state_write, _) = open(path, &second)?;
    let (state_read, _) = open(path, &second)?;
    Ok(StoreHandles {
        log,
        state_write,
        state_read,
        info,
    })
}

/// Errors opening or probing a device. Each names the path.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Nothing at the path.
    #[error("{}: no such file or device", path.display())]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The OS refused access.
    #[error("{}: permission denied", path.display())]
    PermissionDenied {
        /// The path.
        path: PathBuf,
    },
    /// The block device is in use (mounted, or opened exclusively by another process).
    #[error("{}: device busy (mounted or in use by another process)", path.display())]
    Busy {
        /// The path.
        path: PathBuf,
    },
    /// The path is a directory, a character device, a socket, ...
    #[error("{}: not a block device or regular file", path.display())]
    NotBlockOrFile {
        /// The path.
        path: PathBuf,
    },
    /// The device is smaller than the engine needs.
    #[error("{}: too small: {size} bytes, at least {min} needed", path.display())]
    TooSmall {
        /// The path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The minimum in bytes.
        min: u64,
    },
    /// The logical block size is not a power of two between 512 and 65536.
    #[error("{}: unsupported logical block size {block_size}", path.display())]
    BadBlockSize {
        /// The path.
        path: PathBuf,
        /// The block size found.
        block_size: u32,
    },
    /// Setting up the I/O backend failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O layer's error.
        source: IoError,
    },
    /// Another OS error (for example `O_DIRECT` refused with EINVAL by tmpfs).
    #[error("{}: {source}", path.display())]
    Os {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The shape of the device or file at `path`.
pub fn probe(path: &Path) -> Result<DeviceInfo, DeviceError> {
    let meta = std::fs::metadata(path).map_err(|e| os_error(path, e))?;
    let file_type = meta.file_type();
    let (kind, block_size, size) = if file_type.is_block_device() {
        let file = File::open(path).map_err(|e| os_error(path, e))?;
        let (size, block_size) = block_device_shape(&file).map_err(|e| os_error(path, e))?;
        (DeviceKind::BlockDevice, block_size, size)
    } else if file_type.is_file() {
        (DeviceKind::RegularFile, file_block_size(path), meta.len())
    } else {
        return Err(DeviceError::NotBlockOrFile {
            path: path.to_path_buf(),
        });
    };
    let valid =
        block_size.is_power_of_two() && (BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&block_size);
    if !valid {
        return Err(DeviceError::BadBlockSize {
            path: path.to_path_buf(),
            block_size,
        });
    }
    let size_bytes = size - size % u64::from(block_size);
    if size_bytes < DEVICE_SIZE_MIN_BYTES {
        let min = DEVICE_SIZE_MIN_BYTES;
        return Err(DeviceError::TooSmall {
            path: path.to_path_buf(),
            size,
            min,
        });
    }
    Ok(DeviceInfo {
        path: path.to_path_buf(),
        kind,
        logical_block_size: block_size,
        size_bytes,
    })
}

/// Open `path` for direct I/O with the backend of `opts`, with the [`DurableMode`] measured
/// fastest for its kind (see [`DurableMode::for_kind`]).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<(Box<dyn Io>, DeviceInfo), DeviceError> {
    let kind = match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_block_device() => DeviceKind::BlockDevice,
        _ => DeviceKind::RegularFile,
    };
    open_with_mode(path, opts, DurableMode::for_kind(kind))
}

/// [`open`] with an explicit [`DurableMode`] for the `uring` backend (ignored by `sync`).
pub fn open_with_mode(
    path: &Path,
    opts: &OpenOptions,
    mode: DurableMode,
) -> Result<(Box<dyn Io>, DeviceInfo), DeviceError> {
    if let Some(size) = opts.create_size_bytes {
        create_or_extend(path, size, opts.direct)?;
    }
    let info = probe(path)?;
    let file = open_file(path, info.kind, opts.direct, opts.exclusive)?;
    if opts.direct {
        check_direct_alignment(&file, &info)?;
    }
    let geometry = info.geometry();
    let align = info.logical_block_size as usize;
    let pool =
        BufPool::new(opts.pool_slot_size_bytes, opts.pool_slot_count, align).map_err(|source| {
            DeviceError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let queue_depth = opts.queue_depth.max(1);
    let io: Box<dyn Io> = match opts.backend {
        Backend::Sync => Box::new(SyncIo::new(file, geometry, queue_depth, pool)),
        Backend::Uring => Box::new(
            UringIo::new(file, geometry, queue_depth, pool, mode).map_err(|source| {
                DeviceError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?,
        ),
        Backend::Auto => {
            let spare = file.try_clone().map_err(|e| os_error(path, e))?;
            match UringIo::new(file, geometry, queue_depth, pool, mode) {
                Ok(uring) => Box::new(uring),
                Err(IoError::UringUnavailable(error)) => {
                    tracing::warn!(path = %path.display(), %error,
                        "io_uring refused by the kernel; falling back to the sync backend");
                    let pool = BufPool::new(opts.pool_slot_size_bytes, opts.pool_slot_count, align)
                        .map_err(|source| DeviceError::Io {
                            path: path.to_path_buf(),
                            source,
                        })?;
                    Box::new(SyncIo::new(spare, geometry, queue_depth, pool))
                }
                Err(source) => {
                    return Err(DeviceError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
    };
    Ok((io, info))
}

/// A simulated device (see [`sim::SimIo`]).
pub fn sim(seed: u64, geometry: Geometry, faults: sim::FaultConfig) -> sim::SimIo {
    sim::SimIo::new(seed, geometry, faults)
}

/// Creates the file or extends it to `size` bytes. With `zero_fill` (direct I/O: the engine's
/// case) the new range is written with zeros rather than left as a hole, so that every later
/// write is an overwrite of allocated blocks, as on a raw disk. Writing into a hole makes ext4
/// allocate blocks and write their metadata on every synced direct write, and io_uring hands
/// such writes to a kernel worker thread: `basalt-bench --target log` at one write in flight
/// measured p50 219 µs on a sparse file against 137 µs on a zeroed one, and a 3-node cluster
/// issued two device writes (data and metadata) per log write. Zeroing takes about 0.7 s per
/// GiB here and is done once; an interrupted fill leaves a shorter file that the next open
/// extends. Without direct I/O (tmpfs) the file stays sparse: zeros would only cost memory.
fn create_or_extend(path: &Path, size: u64, zero_fill: bool) -> Result<(), DeviceError> {
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.file_type().is_file() {
            return Ok(()); // block devices are never resized; probe checks the rest
        }
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| os_error(path, e))?;
    let len = file.metadata().map_err(|e| os_error(path, e))?.len();
    if len >= size {
        return Ok(());
    }
    if zero_fill {
        let started = std::time::Instant::now();
        write_zeros(&file, len, size).map_err(|e| os_error(path, e))?;
        tracing::info!(path = %path.display(), from = len, to = size, elapsed_ms = started.elapsed().as_millis() as u64, "device file zero-filled");
    } else {
        file.set_len(size).map_err(|e| os_error(path, e))?;
    }
    Ok(())
}

/// Writes zeros over `[from, to)` of `file` and makes them durable, then drops them from the
/// page cache (the engine reads the device directly).
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK_BYTES: u64 = 4 << 20;
    let zeros = vec![0u8; CHUNK_BYTES as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK_BYTES);
        file.write_all_at(&zeros[..n as usize], at)?;
        at += n;
    }
    file.sync_all()?;
    // SAFETY: plain syscall on an open descriptor; advice only, failure is harmless.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as libc::off_t,
            (to - from) as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    Ok(())
}

/// Attempts at an `O_EXCL` open that fails with EBUSY, and the pause between them. The kernel
/// claims a block device for a moment when another process merely tries to configure it (a
/// concurrent `losetup -f` probing a bound loop device does), so a single EBUSY is not proof
/// that the device is in use; a mounted or held device is still refused after 100 ms.
const BUSY_ATTEMPTS: u32 = 10;
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

fn open_file(
    path: &Path,
    kind: DeviceKind,
    direct: bool,
    exclusive: bool,
) -> Result<File, DeviceError> {
    let mut flags = libc::O_CLOEXEC;
    if direct {
        flags |= libc::O_DIRECT;
    }
    if kind == DeviceKind::BlockDevice && exclusive {
        flags |= libc::O_EXCL;
    }
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(path)
    };
    let mut attempt = 1;
    loop {
        match open() {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < BUSY_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(BUSY_PAUSE);
            }
            other => return other.map_err(|e| os_error(path, e)),
        }
    }
}

/// One direct read of the first block proves the block size satisfies `O_DIRECT`'s alignment
/// (EINVAL otherwise), before any backend is built on it.
fn check_direct_alignment(file: &File, info: &DeviceInfo) -> Result<(), DeviceError> {
    let block = info.logical_block_size as usize;
    let mut buf = crate::io::AlignedBuf::new(block, block);
    let result = loop {
        match nix::sys::uio::pread(file, buf.as_mut_slice(), 0) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => Err(DeviceError::BadBlockSize {
            path: info.path.clone(),
            block_size: info.logical_block_size,
        }),
        Err(e) => Err(os_error(&info.path, std::io::Error::from(e))),
    }
}

fn os_error(path: &Path, error: std::io::Error) -> DeviceError {
    let path = path.to_path_buf();
    match error.kind() {
        ErrorKind::NotFound => DeviceError::NotFound { path },
        ErrorKind::PermissionDenied => DeviceError::PermissionDenied { path },
        _ if error.raw_os_error() == Some(libc::EBUSY) => DeviceError::Busy { path },
        _ if error.raw_os_error() == Some(libc::EPERM) => DeviceError::PermissionDenied { path },
        _ => DeviceError::Os {
            path,
            source: error,
        },
    }
}

mod ioctl {
    nix::ioctl_read!(
        /// `BLKGETSIZE64`: size of a block device in bytes.
        blkgetsize64,
        0x12,
        114,
        u64
    );
    nix::ioctl_read_bad!(
        /// `BLKSSZGET`: logical sector size of a block device.
        blksszget,
        libc::BLKSSZGET,
        libc::c_int
    );
}
use ioctl::{blkgetsize64, blksszget};

/// (size in bytes, logical block size) of an open block device.
fn block_device_shape(file: &File) -> std::io::Result<(u64, u32)> {
    let fd = file.as_raw_fd();
    let mut size: u64 = 0;
    // SAFETY: fd is an open block device; the kernel writes one u64 into `size`.
    unsafe { blkgetsize64(fd, &mut size) }.map_err(std::io::Error::from)?;
    let mut ssz: libc::c_int = 0;
    // SAFETY: fd is an open block device; the kernel writes one int into `ssz`.
    unsafe { blksszget(fd, &mut ssz) }.map_err(std::io::Error::from)?;
    Ok((size, u32::try_from(ssz).unwrap_or(0)))
}

/// Block size for a regular file: 4096, or the direct-I/O offset alignment if statx reports a
/// larger one.
fn file_block_size(path: &Path) -> u32 {
    dio_offset_align(path).map_or(FILE_BLOCK_SIZE_BYTES, |a| a.max(FILE_BLOCK_SIZE_BYTES))
}

fn dio_offset_align(path: &Path) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and stx is a valid out-pointer.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            0,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    let reported = rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0;
    (reported && stx.stx_dio_offset_align > 0).then_some(stx.stx_dio_offset_align)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn allocated_bytes(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn direct_files_are_zero_filled_and_extended_without_touching_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        create_or_extend(&path, 1 << 20, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        assert!(allocated_bytes(&path) >= 1 << 20, "no holes are left");
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));
        // Extending keeps the existing bytes and fills the new range.
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        create_or_extend(&path, 3 << 20, true).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 3 << 20);
        assert!(data[..1 << 20].iter().all(|&b| b == 7));
        assert!(data[1 << 20..].iter().all(|&b| b == 0));
        assert!(allocated_bytes(&path) >= 3 << 20);
        // Never shrinks.
        create_or_extend(&path, 1 << 20, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
    }

    #[test]
    fn files_without_direct_io_stay_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        create_or_extend(&path, 8 << 20, false).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 << 20);
        assert!(allocated_bytes(&path) < 8 << 20);
    }
}
