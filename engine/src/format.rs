//! Formatting a device as a Basalt store, reading its superblocks, and opening its log.
//!
//! Formatting refuses a device that holds a filesystem, volume or partition-table signature, or
//! another Basalt store, unless forced: a store is created on a whole raw device and a mistake
//! there destroys data.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{EngineError, Result};
use crate::io::{run_one, AlignedBuf, Io, IoOp};
use crate::layout::segment::{Geometry, GeometryError};
use crate::layout::superblock::SuperblockDefect;
use crate::layout::{
    Checkpoint, Superblock, BLOCK_SIZE_DEFAULT, FORMAT_VERSION, KIB, SEGMENT_SIZE_DEFAULT,
    SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS,
};
use crate::log::recovery::{recover, RecoveryReport};
use crate::log::writer::WritePos;
use crate::log::{DeviceSlot, LogConfig, LogStore, Shared};

/// Options of `basalt format`.
#[derive(Clone, Debug)]
pub struct FormatOptions {
    /// How the device is named in errors.
    pub device_label: String,
    /// Store id; random when `None`.
    pub store_id: Option<u64>,
    /// Cluster id; random when `None`.
    pub cluster_id: Option<u128>,
    /// Block size. Default 4096: the logical block of most NVMe devices.
    pub block_size: u32,
    /// Segment size. Default 64 MiB (see [`SEGMENT_SIZE_DEFAULT`]).
    pub segment_size_bytes: u64,
    /// Format even over a filesystem signature or another Basalt store.
    pub force: bool,
    /// Format nonce; random when `None` (tests fix it for determinism).
    pub format_nonce: Option<u64>,
    /// Segments given to the log's ring (the rest go to the state store); `None` picks
    /// [`Geometry::default_log_segment_count`].
    pub log_segment_count: Option<u32>,
}

impl FormatOptions {
    /// Defaults for the device named `device_label`.
    pub fn new(device_label: impl Into<String>) -> FormatOptions {
        FormatOptions {
            device_label: device_label.into(),
            store_id: None,
            cluster_id: None,
            block_size: BLOCK_SIZE_DEFAULT,
            segment_size_bytes: SEGMENT_SIZE_DEFAULT,
            force: false,
            format_nonce: None,
            log_segment_count: None,
        }
    }
}

/// A random `u64` from the standard library's per-process random hasher keys, mixed with the time.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

/// Bytes read from the start of a device to look for signatures.
pub const SIGNATURE_SCAN_BYTES: u64 = 128 * KIB;

/// A known foreign signature in the first [`SIGNATURE_SCAN_BYTES`] of `head`: `(what, offset)`.
pub fn foreign_signature(head: &[u8]) -> Option<(&'static str, u64)> {
    let at = |off: usize, magic: &[u8]| {
        head.len() >= off + magic.len() && &head[off..off + magic.len()] == magic
    };
    let table: [(&'static str, usize, &[u8]); 10] = [
        ("XFS", 0, b"XFSB"),
        ("LUKS", 0, b"LUKS\xba\xbe"),
        ("LUKS2", 0, b"SKUL\xba\xbe"),
        ("GPT partition table", 512, b"EFI PART"),
        ("GPT partition table", 4096, b"EFI PART"),
        ("ext2/3/4", 1080, &[0x53, 0xef]),
        ("swap", 4096 - 10, b"SWAPSPACE2"),
        ("swap", 4096 - 10, b"SWAP-SPACE"),
        ("btrfs", 65600, b"_BHRfS_M"),
        ("MBR partition table", 510, &[0x55, 0xaa]),
    ];
    table
        .iter()
        .find(|(_, off, magic)| at(*off, magic))
        .map(|(what, off, _)| (*what, *off as u64))
}

fn io_err(label: &str) -> impl Fn(crate::io::IoError) -> EngineError + '_ {
    move |source| EngineError::Io {
        device: label.to_string(),
        source,
    }
}

fn read(io: &mut dyn Io, label: &str, offset: u64, len: usize) -> Result<AlignedBuf> {
    let align = io.geometry().block_size as usize;
    let buf = AlignedBuf::new(len.div_ceil(align) * align, align);
    let c = run_one(
        io,
        IoOp::Read {
            tag: 1,
            offset,
            buf,
        },
    )
    .map_err(io_err(label))?;
    c.result.map_err(io_err(label))?;
    c.buf.ok_or(EngineError::Io {
        device: label.into(),
        source: crate::io::IoError::Injected("read without buffer"),
    })
}

/// Checks the device's logical block size against the superblock I/O and the store block size.
fn check_block_size(io: &dyn Io, label: &str, block_size: u32) -> Result<()> {
    let dev_bs = io.geometry().block_size;
    let reason = if dev_bs as usize > SUPERBLOCK_LEN {
        Some("device logical blocks larger than 4096 bytes are not supported")
    } else if block_size % dev_bs != 0 {
        Some("the store block size must be a multiple of the device's logical block size")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(EngineError::BadBlockSize {
            device: label.into(),
            block_size: block_size as u64,
            device_block_size: dev_bs as u64,
            reason,
        }),
        None => Ok(()),
    }
}

/// Formats the device: writes both superblock copies (sequence 0 and 1) and flushes.
pub fn format(io: &mut dyn Io, opts: &FormatOptions) -> Result<Superblock> {
    let label = opts.device_label.as_str();
    let capacity = io.geometry().capacity_bytes;
    let geo =
        Geometry::plan(capacity, opts.block_size, opts.segment_size_bytes).map_err(
            |e| match e {
                GeometryError::Invalid(key, reason) => EngineError::InvalidConfig { key, reason },
                GeometryError::TooSmall(min_bytes) => EngineError::DeviceTooSmall {
                    device: label.into(),
                    size_bytes: capacity,
                    min_bytes,
                },
            },
        )?;
    check_block_size(io, label, opts.block_size)?;
    let log_segment_count = opts
        .log_segment_count
        .unwrap_or_else(|| Geometry::default_log_segment_count(geo.segment_count));
    let log_min = crate::layout::SEGMENT_COUNT_MIN as u32;
    if log_segment_count < log_min || log_segment_count > geo.segment_count {
        return Err(EngineError::InvalidConfig {
            key: "log_segment_count",
            reason: format!(
                "{log_segment_count} is outside {log_min}..={} (the device's segments)",
                geo.segment_count
            ),
        });
    }
    if !opts.force {
        refuse_if_in_use(io, label)?;
    }
    let mut sb = Superblock {
        version: FORMAT_VERSION,
        sequence: 0,
        store_id: opts.store_id.unwrap_or_else(random_u64),
        cluster_id: opts
            .cluster_id
            .unwrap_or_else(|| (random_u64() as u128) << 64 | random_u64() as u128),
        format_nonce: opts.format_nonce.unwrap_or_else(random_u64),
        block_size: geo.block_size,
        segment_size_bytes: geo.segment_size_bytes,
        segment_count: geo.segment_count,
        log_segment_count,
        device_size_bytes: capacity,
        data_start_offset: geo.data_start_offset,
        checkpoint: Checkpoint {
            segment: 0,
            offset: geo.segment_offset(0),
            sequence: 1,
            prev_checksum: 0,
        },
    };
    let align = io.geometry().block_size as usize;
    for (copy, &offset) in SUPERBLOCK_OFFSETS.iter().enumerate() {
        sb.sequence = copy as u64;
        let mut buf = AlignedBuf::new(SUPERBLOCK_LEN, align);
        sb.encode(copy, buf.as_mut_slice());
        let c = run_one(
            io,
            IoOp::Write {
                tag: 1,
                offset,
                buf,
                durable: true,
            },
        )
        .map_err(io_err(label))?;
        c.result.map_err(io_err(label))?;
    }
    let c = run_one(io, IoOp::Flush { tag: 2 }).map_err(io_err(label))?;
    c.result.map_err(io_err(label))?;
    tracing::info!(device = label, store_id = sb.store_id, cluster_id = %format_args!("{:032x}", sb.cluster_id),
        segments = sb.segment_count, "formatted");
    Ok(sb)
}

fn refuse_if_in_use(io: &mut dyn Io, label: &str) -> Result<()> {
    let copies = read_superblocks(io, label)?;
    if let Some((_, sb)) = Superblock::newest(&copies) {
        return Err(EngineError::AlreadyFormatted {
            device: label.into(),
            store_id: sb.store_id,
            cluster_id: sb.cluster_id,
        });
    }
    if copies
        .iter()
        .any(|c| !matches!(c, Err(SuperblockDefect::NoMagic)))
    {
        return Err(EngineError::AlreadyFormatted {
            device: label.into(),
            store_id: 0,
            cluster_id: 0,
        });
    }
    let head = read(io, label, 0, SIGNATURE_SCAN_BYTES as usize)?;
    if let Some((what, offset)) = foreign_signature(head.as_slice()) {
        return Err(EngineError::ForeignSignature {
            device: label.into(),
            what,
            offset,
        });
    }
    Ok(())
}

/// Reads and verifies both superblock copies.
pub fn read_superblocks(
    io: &mut dyn Io,
    label: &str,
) -> Result<[std::result::Result<Superblock, SuperblockDefect>; 2]> {
    let mut out = [
        Err(SuperblockDefect::NoMagic),
        Err(SuperblockDefect::NoMagic),
    ];
    for (copy, slot) in out.iter_mut().enumerate() {
        let buf = read(io, label, SUPERBLOCK_OFFSETS[copy], SUPERBLOCK_LEN)?;
        *slot = Superblock::decode(copy, buf.as_slice());
    }
    Ok(out)
}

/// The newest valid superblock, or a clear error naming the device.
pub fn open_superblock(io: &mut dyn Io, label: &str) -> Result<(usize, Superblock)> {
    let min = SUPERBLOCK_OFFSETS[1] + SUPERBLOCK_LEN as u64;
    let capacity = io.geometry().capacity_bytes;
    if capacity < min {
        return Err(EngineError::NotFormatted {
            device: label.into(),
            detail: format!("only {capacity} bytes"),
        });
    }
    let copies = read_superblocks(io, label)?;
    if let Some(best) = Superblock::newest(&copies) {
        return Ok(best);
    }
    if let Some(Err(SuperblockDefect::Version { found })) = copies
        .iter()
        .find(|c| matches!(c, Err(SuperblockDefect::Version { .. })))
    {
        return Err(EngineError::UnsupportedVersion {
            device: label.into(),
            found: *found,
            supported: FORMAT_VERSION,
        });
    }
    let detail = match &copies {
        [Err(SuperblockDefect::NoMagic), Err(SuperblockDefect::NoMagic)] => {
            "no superblock found".to_string()
        }
        [Err(a), Err(b)] => format!("superblock copy 0: {a}; copy 1: {b}"),
        _ => "no valid superblock".to_string(),
    };
    Err(EngineError::NotFormatted {
        device: label.into(),
        detail,
    })
}

/// Flushes the device, reads its newest valid superblock and checks it against the device.
pub(crate) fn open_checked(io: &mut dyn Io, label: &str) -> Result<(usize, Superblock)> {
    let c = run_one(io, IoOp::Flush { tag: 0 }).map_err(io_err(label))?;
    c.result.map_err(io_err(label))?;
    let (copy, sb) = open_superblock(io, label)?;
    check_block_size(io, label, sb.block_size)?;
    let geo = Geometry::of(&sb);
    let capacity = io.geometry().capacity_bytes;
    if geo.end_offset() > capacity
        || sb.segment_count == 0
        || sb.log_segment_count < crate::layout::SEGMENT_COUNT_MIN as u32
        || sb.log_segment_count > sb.segment_count
        || sb.segment_size_bytes % sb.block_size as u64 != 0
    {
        return Err(EngineError::GeometryMismatch {
            device: label.into(),
            detail: format!(
                "{} segments of {} bytes do not fit {capacity} bytes",
                sb.segment_count, sb.segment_size_bytes
            ),
        });
    }
    Ok((copy, sb))
}

impl LogStore {
    /// Opens the store on `io`: flushes the device once, reads the newest valid superblock, scans
    /// the log and rebuilds the index. Regions damaged before the tail are refused (see the
    /// report); a torn tail is discarded.
    pub fn open(mut io: Box<dyn Io>, config: LogConfig) -> Result<(LogStore, RecoveryReport)> {
        config.validate()?;
        let label = config.device_label.clone();
        let (copy, sb) = open_checked(io.as_mut(), &label)?;
        let mut dev = DeviceSlot::new(io);
        let rec = recover(&mut dev, &sb, &label, config.cache_bytes_max)?;
        let mut report = rec.report;
        report.superblock_copy = copy;
        let shared = Arc::new(Shared {
            label,
            nonce: sb.format_nonce,
            geometry: Geometry::log_of(&sb),
            device: Mutex::new(dev),
            index: RwLock::new(rec.index),
            deferred: Mutex::new(Vec::new()),
            has_deferred: AtomicBool::new(false),
        });
        let pos: WritePos = rec.pos;
        Ok((LogStore::from_parts(shared, config, sb, pos), report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_recognised_at_their_offsets() {
        let mut head = vec![0u8; SIGNATURE_SCAN_BYTES as usize];
        assert_eq!(foreign_signature(&head), None);
        head[1080] = 0x53;
        head[1081] = 0xef;
        assert_eq!(foreign_signature(&head), Some(("ext2/3/4", 1080)));
        let mut head = vec![0u8; SIGNATURE_SCAN_BYTES as usize];
        head[65600..65608].copy_from_slice(b"_BHRfS_M");
        assert_eq!(foreign_signature(&head), Some(("btrfs", 65600)));
        let mut head = vec![0u8; SIGNATURE_SCAN_BYTES as usize];
        head[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(foreign_signature(&head), Some(("swap", 4086)));
    }
}
