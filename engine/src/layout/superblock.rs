//! The superblock: identity, geometry and the log checkpoint of a store, kept in two copies.
//!
//! Writes alternate between the copies, each with a higher sequence number; the newest copy whose
//! checksum verifies wins, so a torn superblock write always leaves the other copy intact.

use super::le::{get_u128, get_u32, get_u64, put_u128, put_u32, put_u64};
use super::{FORMAT_VERSION, SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS};

/// The 8 magic bytes that open a superblock.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"BASALTSB";

/// Byte offsets of the superblock fields (`docs/FORMAT.md`, "Engine: superblock").
pub mod field {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u32` format version.
    pub const VERSION: usize = 8;
    /// `u32` copy slot (0 or 1) this image was written for.
    pub const COPY: usize = 12;
    /// `u64` sequence number (higher is newer).
    pub const SEQUENCE: usize = 16;
    /// `u64` store id.
    pub const STORE_ID: usize = 24;
    /// `u128` cluster id.
    pub const CLUSTER_ID: usize = 32;
    /// `u64` random per-format nonce, mixed into every block checksum.
    pub const FORMAT_NONCE: usize = 48;
    /// `u32` block size.
    pub const BLOCK_SIZE: usize = 56;
    /// `u32` segment count.
    pub const SEGMENT_COUNT: usize = 60;
    /// `u64` segment size in bytes.
    pub const SEGMENT_SIZE: usize = 64;
    /// `u64` device size at format time.
    pub const DEVICE_SIZE: usize = 72;
    /// `u64` device offset of segment 0.
    pub const DATA_START: usize = 80;
    /// `u64` checkpoint: device offset of the first batch to scan.
    pub const CHECKPOINT_OFFSET: usize = 88;
    /// `u64` checkpoint: sequence number of that batch.
    pub const CHECKPOINT_SEQUENCE: usize = 96;
    /// `u32` checkpoint: chain checksum of the batch before it.
    pub const CHECKPOINT_PREV_CHECKSUM: usize = 104;
    /// `u32` checkpoint: segment holding that batch.
    pub const CHECKPOINT_SEGMENT: usize = 108;
    /// `u32` segments `0..log_segment_count` form the log's ring; the rest belong to the state
    /// store.
    pub const LOG_SEGMENT_COUNT: usize = 112;
    /// First reserved (zero) byte.
    pub const RESERVED: usize = 116;
    /// `u32` CRC-32 (IEEE, crc32fast) over bytes `0..CHECKSUM` then the copy's device
    /// offset as `u64` little-endian.
    pub const CHECKSUM: usize = super::SUPERBLOCK_LEN - 4;
}

/// Where recovery starts scanning the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Segment holding the first batch.
    pub segment: u32,
    /// Device offset of the first batch.
    pub offset: u64,
    /// Its sequence number.
    pub sequence: u64,
    /// The chain checksum it must carry (that of the batch before it).
    pub prev_checksum: u32,
}

/// One decoded superblock copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Format version.
    pub version: u32,
    /// Sequence number; the newest valid copy wins.
    pub sequence: u64,
    /// The store's id within its cluster.
    pub store_id: u64,
    /// The cluster's id.
    pub cluster_id: u128,
    /// Random per format; part of every block checksum so blocks of an earlier format are stale.
    pub format_nonce: u64,
    /// Store block size in bytes (a multiple of the device's logical block size).
    pub block_size: u32,
    /// Segment size in bytes (a multiple of `block_size`).
    pub segment_size_bytes: u64,
    /// Number of segments.
    pub segment_count: u32,
    /// Segments `0..log_segment_count` are the log's ring; `log_segment_count..segment_count`
    /// are the state store's.
    pub log_segment_count: u32,
    /// Device size when formatted.
    pub device_size_bytes: u64,
    /// Device offset of segment 0.
    pub data_start_offset: u64,
    /// Where recovery starts.
    pub checkpoint: Checkpoint,
}

/// Why a superblock copy was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuperblockDefect {
    /// The magic bytes are absent: not a Basalt superblock.
    NoMagic,
    /// The checksum does not match.
    Checksum {
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
    /// The image was written for the other copy slot (a misdirected write).
    WrongSlot {
        /// Slot the image names.
        found: u32,
    },
    /// Written by another format version.
    Version {
        /// Version found.
        found: u32,
    },
}

impl std::fmt::Display for SuperblockDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SuperblockDefect::NoMagic => write!(f, "no Basalt magic"),
            SuperblockDefect::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            SuperblockDefect::WrongSlot { found } => write!(f, "image written for copy {found}"),
            SuperblockDefect::Version { found } => {
                write!(
                    f,
                    "format version {found}, this build reads {FORMAT_VERSION}"
                )
            }
        }
    }
}

fn checksum(image: &[u8], copy: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&image[..field::CHECKSUM]);
    h.update(&SUPERBLOCK_OFFSETS[copy].to_le_bytes());
    h.finalize()
}

impl Superblock {
    /// Encodes this superblock for copy slot `copy` (0 or 1) into `out` (`SUPERBLOCK_LEN` bytes).
    pub fn encode(&self, copy: usize, out: &mut [u8]) {
        assert!(copy < 2, "superblock copy {copy} out of range");
        assert_eq!(out.len(), SUPERBLOCK_LEN, "superblock image length");
        out.fill(0);
        out[field::MAGIC..field::MAGIC + 8].copy_from_slice(&SUPERBLOCK_MAGIC);
        put_u32(out, field::VERSION, self.version);
        put_u32(out, field::COPY, copy as u32);
        put_u64(out, field::SEQUENCE, self.sequence);
        put_u64(out, field::STORE_ID, self.store_id);
        put_u128(out, field::CLUSTER_ID, self.cluster_id);
        put_u64(out, field::FORMAT_NONCE, self.format_nonce);
        put_u32(out, field::BLOCK_SIZE, self.block_size);
        put_u32(out, field::SEGMENT_COUNT, self.segment_count);
        put_u64(out, field::SEGMENT_SIZE, self.segment_size_bytes);
        put_u64(out, field::DEVICE_SIZE, self.device_size_bytes);
        put_u64(out, field::DATA_START, self.data_start_offset);
        put_u64(out, field::CHECKPOINT_OFFSET, self.checkpoint.offset);
        put_u64(out, field::CHECKPOINT_SEQUENCE, self.checkpoint.sequence);
        put_u32(
            out,
            field::CHECKPOINT_PREV_CHECKSUM,
            self.checkpoint.prev_checksum,
        );
        put_u32(out, field::CHECKPOINT_SEGMENT, self.checkpoint.segment);
        put_u32(out, field::LOG_SEGMENT_COUNT, self.log_segment_count);
        let sum = checksum(out, copy);
        put_u32(out, field::CHECKSUM, sum);
    }

    /// Whether `image` starts with the superblock magic (valid or not).
    pub fn has_magic(image: &[u8]) -> bool {
        image.len() >= 8 && image[..8] == SUPERBLOCK_MAGIC
    }

    /// Decodes and verifies the image read from copy slot `copy`.
    pub fn decode(copy: usize, image: &[u8]) -> Result<Superblock, SuperblockDefect> {
        assert!(
            copy < 2 && image.len() >= SUPERBLOCK_LEN,
            "superblock image length"
        );
        let image = &image[..SUPERBLOCK_LEN];
        if !Self::has_magic(image) {
            return Err(SuperblockDefect::NoMagic);
        }
        let stored = get_u32(image, field::CHECKSUM);
        let computed = checksum(image, copy);
        if stored != computed {
            return Err(SuperblockDefect::Checksum { stored, computed });
        }
        let slot = get_u32(image, field::COPY);
        if slot as usize != copy {
            return Err(SuperblockDefect::WrongSlot { found: slot });
        }
        let version = get_u32(image, field::VERSION);
        if version != FORMAT_VERSION {
            return Err(SuperblockDefect::Version { found: version });
        }
        Ok(Superblock {
            version,
            sequence: get_u64(image, field::SEQUENCE),
            store_id: get_u64(image, field::STORE_ID),
            cluster_id: get_u128(image, field::CLUSTER_ID),
            format_nonce: get_u64(image, field::FORMAT_NONCE),
            block_size: get_u32(image, field::BLOCK_SIZE),
            segment_count: get_u32(image, field::SEGMENT_COUNT),
            log_segment_count: get_u32(image, field::LOG_SEGMENT_COUNT),
            segment_size_bytes: get_u64(image, field::SEGMENT_SIZE),
            device_size_bytes: get_u64(image, field::DEVICE_SIZE),
            data_start_offset: get_u64(image, field::DATA_START),
            checkpoint: Checkpoint {
                offset: get_u64(image, field::CHECKPOINT_OFFSET),
                sequence: get_u64(image, field::CHECKPOINT_SEQUENCE),
                prev_checksum: get_u32(image, field::CHECKPOINT_PREV_CHECKSUM),
                segment: get_u32(image, field::CHECKPOINT_SEGMENT),
            },
        })
    }

    /// The copy slot the next write of this superblock goes to (the one not holding `sequence`).
    pub fn next_copy(&self) -> usize {
        ((self.sequence + 1) % 2) as usize
    }

    /// Picks the newest valid copy among the two decode results.
    pub fn newest(
        copies: &[Result<Superblock, SuperblockDefect>; 2],
    ) -> Option<(usize, Superblock)> {
        let mut best: Option<(usize, Superblock)> = None;
        for (i, c) in copies.iter().enumerate() {
            if let Ok(sb) = c {
                if best.is_none_or(|(_, b)| sb.sequence > b.sequence) {
                    best = Some((i, *sb));
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            sequence: 7,
            store_id: 42,
            cluster_id: 0x1234_5678_9abc_def0_1122_3344_5566_7788,
            format_nonce: 0xfeed,
            block_size: 4096,
            segment_size_bytes: 64 << 20,
            segment_count: 10,
            log_segment_count: 3,
            device_size_bytes: 1 << 30,
            data_start_offset: 1 << 20,
            checkpoint: Checkpoint {
                segment: 3,
                offset: (1 << 20) + 3 * (64 << 20),
                sequence: 99,
                prev_checksum: 5,
            },
        }
    }

    #[test]
    fn round_trips_and_detects_every_flipped_byte() {
        let sb = sample();
        let mut img = vec![0u8; SUPERBLOCK_LEN];
        sb.encode(1, &mut img);
        assert_eq!(Superblock::decode(1, &img), Ok(sb));
        for i in 0..SUPERBLOCK_LEN {
            let mut bad = img.clone();
            bad[i] ^= 0x10;
            assert!(Superblock::decode(1, &bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn copy_written_for_one_slot_is_rejected_in_the_other() {
        let mut img = vec![0u8; SUPERBLOCK_LEN];
        sample().encode(0, &mut img);
        assert!(matches!(
            Superblock::decode(1, &img),
            Err(SuperblockDefect::Checksum { .. })
        ));
    }

    #[test]
    fn newest_valid_copy_wins() {
        let a = sample();
        let b = Superblock { sequence: 8, ..a };
        assert_eq!(Superblock::newest(&[Ok(a), Ok(b)]), Some((1, b)));
        assert_eq!(
            Superblock::newest(&[Ok(a), Err(SuperblockDefect::NoMagic)]),
            Some((0, a))
        );
        assert_eq!(
            Superblock::newest(&[
                Err(SuperblockDefect::NoMagic),
                Err(SuperblockDefect::NoMagic)
            ]),
            None
        );
    }
}
