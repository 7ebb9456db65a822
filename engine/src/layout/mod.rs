//! The on-disk layout of a store: two superblock copies, then fixed-size segments of checksummed
//! blocks. Byte diagrams and version history: `docs/FORMAT.md` (the one description of the layout;
//! the constants here are derived one from another and checked against it by a test).

pub mod block;
pub mod le;
pub mod segment;
pub mod superblock;

pub use block::{BlockHeader, BLOCK_HEADER_LEN};
pub use segment::Geometry;
pub use superblock::{Checkpoint, Superblock};

/// One kibibyte.
pub const KIB: u64 = 1024;
/// One mebibyte.
pub const MIB: u64 = 1024 * KIB;

/// The on-disk format version this build writes and reads. History in `docs/FORMAT.md`.
pub const FORMAT_VERSION: u32 = 2;

/// Bytes of one superblock copy (one I/O; the device's logical block must divide it).
pub const SUPERBLOCK_LEN: usize = 4096;
/// Device offsets of the two superblock copies. Apart, so one damaged area rarely takes both.
pub const SUPERBLOCK_OFFSETS: [u64; 2] = [0, 512 * KIB];
/// Device offsets of the two state-root copies (written only by the state store), inside the
/// superblock area and apart like the superblock copies.
pub const STATE_ROOT_OFFSETS: [u64; 2] = [64 * KIB, 576 * KIB];
/// Bytes of one state-root copy.
pub const STATE_ROOT_LEN: usize = 4096;

/// The area reserved for superblocks (and left untouched otherwise); segment 0 starts here.
pub const SUPERBLOCK_AREA_BYTES: u64 = MIB;

/// Smallest and largest store block size (powers of two).
pub const BLOCK_SIZE_MIN: u32 = 512;
/// See [`BLOCK_SIZE_MIN`]. Capped so a block always fits the superblock area alignment.
pub const BLOCK_SIZE_MAX: u32 = 64 * KIB as u32;
/// Default store block size: the logical block of most NVMe devices.
pub const BLOCK_SIZE_DEFAULT: u32 = 4096;

/// Default segment size: large enough that a segment switch is rare, small enough that a slow
/// region pins little space.
pub const SEGMENT_SIZE_DEFAULT: u64 = 64 * MIB;
/// Smallest segment, in blocks: a segment must hold a useful batch.
pub const SEGMENT_BLOCKS_MIN: u64 = 16;
/// A store needs at least this many segments (one being written, one to move on to).
pub const SEGMENT_COUNT_MIN: u64 = 2;

const _: () = assert!(SUPERBLOCK_OFFSETS[1] + SUPERBLOCK_LEN as u64 <= SUPERBLOCK_AREA_BYTES);
const _: () = assert!(STATE_ROOT_OFFSETS[1] + STATE_ROOT_LEN as u64 <= SUPERBLOCK_AREA_BYTES);
const _: () = assert!(STATE_ROOT_OFFSETS[0] % BLOCK_SIZE_MAX as u64 == 0);
const _: () = assert!(STATE_ROOT_OFFSETS[1] % BLOCK_SIZE_MAX as u64 == 0);
const _: () = assert!(SUPERBLOCK_AREA_BYTES % BLOCK_SIZE_MAX as u64 == 0);
const _: () = assert!(SUPERBLOCK_OFFSETS[1] % BLOCK_SIZE_MAX as u64 == 0);
