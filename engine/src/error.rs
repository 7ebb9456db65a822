//! The engine's typed error: one enum a caller can match, per STYLE.md.

use crate::io::IoError;

/// Everything that can go wrong when formatting, opening, reading or writing a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The device failed an operation.
    #[error("{device}: I/O error: {source}")]
    Io {
        /// The device (path or label).
        device: String,
        /// The backend's error.
        #[source]
        source: IoError,
    },
    /// No valid Basalt superblock on the device.
    #[error("{device}: not a Basalt store ({detail})")]
    NotFormatted {
        /// The device.
        device: String,
        /// What was found instead.
        detail: String,
    },
    /// The device holds another filesystem, volume or partition table.
    #[error(
        "{device}: holds a {what} signature at offset {offset}; refusing to format without --force"
    )]
    ForeignSignature {
        /// The device.
        device: String,
        /// What was recognised (`ext2/3/4`, `XFS`, ...).
        what: &'static str,
        /// Byte offset of the signature.
        offset: u64,
    },
    /// The device already holds a Basalt store.
    #[error("{device}: already holds Basalt store {store_id} of cluster {cluster_id:032x}; refusing to format without --force")]
    AlreadyFormatted {
        /// The device.
        device: String,
        /// Store id found.
        store_id: u64,
        /// Cluster id found.
        cluster_id: u128,
    },
    /// The device cannot hold a store of the requested geometry.
    #[error("{device}: too small: {size_bytes} bytes, a store needs at least {min_bytes}")]
    DeviceTooSmall {
        /// The device.
        device: String,
        /// Its size.
        size_bytes: u64,
        /// The minimum for this geometry.
        min_bytes: u64,
    },
    /// The store's block size does not fit the device.
    #[error("{device}: block size {block_size} is unusable with the device's {device_block_size}-byte logical blocks ({reason})")]
    BadBlockSize {
        /// The device.
        device: String,
        /// Requested or recorded block size.
        block_size: u64,
        /// The device's logical block size.
        device_block_size: u64,
        /// Why.
        reason: &'static str,
    },
    /// A configuration or format option is invalid.
    #[error("invalid `{key}`: {reason}")]
    InvalidConfig {
        /// The option's name.
        key: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The superblock was written by an unknown format version.
    #[error("{device}: unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The device.
        device: String,
        /// Version found.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
    /// The superblock's geometry does not match the device.
    #[error("{device}: superblock geometry does not match the device: {detail}")]
    GeometryMismatch {
        /// The device.
        device: String,
        /// What differs.
        detail: String,
    },
    /// A checksummed structure failed verification.
    #[error("corrupt {what} at offset {offset}: {detail}")]
    Corrupt {
        /// What was read (`superblock`, `log block`, `log batch`).
        what: &'static str,
        /// Device offset.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// The region's log was damaged before the tail; it is not served until repaired.
    #[error("region {region_id} refused: log corrupt at index range {first_index}..={last_index} ({detail})")]
    RegionRefused {
        /// The region.
        region_id: u64,
        /// First index possibly affected.
        first_index: u64,
        /// Last index possibly affected (`u64::MAX`: unknown).
        last_index: u64,
        /// Where the corruption was found.
        detail: String,
    },
    /// Every segment is in use: compaction must free the tail before more can be written.
    #[error("log full: all {segment_count} segments in use (tail segment {tail_segment})")]
    LogFull {
        /// Segments on the device.
        segment_count: u32,
        /// The oldest segment still holding live data.
        tail_segment: u32,
    },
    /// A batch does not fit in one segment.
    #[error("batch of {size_bytes} bytes exceeds the maximum of {max_bytes}")]
    BatchTooLarge {
        /// Encoded size.
        size_bytes: u64,
        /// The limit (one segment).
        max_bytes: u64,
    },
    /// Entries appended for a region do not follow its log.
    #[error(
        "region {region_id}: entries from index {index} leave a gap after last index {last_index}"
    )]
    AppendGap {
        /// The region.
        region_id: u64,
        /// First index of the appended run.
        index: u64,
        /// The region's last index.
        last_index: u64,
    },
    /// The log holds nothing for this region.
    #[error("region {region_id}: nothing in the log")]
    UnknownRegion {
        /// The region.
        region_id: u64,
    },
    /// The device was formatted with too few segments left for the state store (a device
    /// formatted for the log alone, or too small).
    #[error("{device}: the state store has {segment_count} segments, a store needs at least {min_count}: format a larger device (or smaller segments)")]
    StateTooSmall {
        /// The device.
        device: String,
        /// Segments of the state partition.
        segment_count: u32,
        /// The fewest that work.
        min_count: u32,
    },
    /// Every state segment is in use: compaction must free some before more can be written.
    #[error("state store full: all {segment_count} state segments in use")]
    StateFull {
        /// Segments of the state partition.
        segment_count: u32,
    },
    /// A state record (key + value) does not fit in one state segment.
    #[error("state record of {size_bytes} bytes exceeds the maximum of {max_bytes}")]
    StateRecordTooLarge {
        /// Encoded size.
        size_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The state store holds no such region.
    #[error("region {region_id}: not in the state store")]
    StateRegionUnknown {
        /// The region.
        region_id: u64,
    },
    /// The state store already holds this region.
    #[error("region {region_id}: already in the state store")]
    StateRegionExists {
        /// The region.
        region_id: u64,
    },
    /// An entry was applied at or below the region's applied index.
    #[error("region {region_id}: index {index} is not after the applied index {applied_index}")]
    StaleApply {
        /// The region.
        region_id: u64,
        /// The index given.
        index: u64,
        /// The region's applied index.
        applied_index: u64,
    },
    /// No snapshot install with this id is in progress.
    #[error("no snapshot install {install_id} in progress")]
    UnknownInstall {
        /// The install id.
        install_id: u64,
    },
    /// Snapshot entries given to an install out of key order.
    #[error("region {region_id}: snapshot install keys must be strictly ascending")]
    InstallKeyOrder {
        /// The region being installed.
        region_id: u64,
    },
    /// A state-store call that conflicts with one in progress (a checkpoint, an install).
    #[error("state store busy: {what}")]
    StateBusy {
        /// What conflicts.
        what: &'static str,
    },
    /// An earlier write or flush failed; the store must be reopened.
    #[error("a previous I/O error latched the log; reopen the store")]
    Latched,
    /// Opening or probing the device failed.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// The log writer thread is gone.
    #[error("the log writer has stopped")]
    WriterStopped,
    /// A worker thread of the state store (apply, snapshot) is gone.
    #[error("the {worker} worker has stopped")]
    WorkerStopped {
        /// Which worker.
        worker: &'static str,
    },
    /// A thread of the store could not be started.
    #[error("could not start the {thread} thread: {source}")]
    ThreadSpawn {
        /// Which thread.
        thread: &'static str,
        /// Why the OS refused.
        source: std::io::Error,
    },
}

/// Result with [`EngineError`].
pub type Result<T> = std::result::Result<T, EngineError>;
