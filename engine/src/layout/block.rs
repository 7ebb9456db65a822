//! Checksummed block framing: every block the log writes opens with a [`BlockHeader`] whose
//! checksum covers the block's contents, the block's own device offset and the store's format
//! nonce, so a block read from the wrong place (misdirected write or read) or left over from an
//! earlier format of the device never verifies.

use super::le::{get_u32, get_u64, put_u32, put_u64};

/// The 4 magic bytes of a log block.
pub const BLOCK_MAGIC: [u8; 4] = *b"BSLG";

/// Bytes of the header at the start of every log block; the payload follows.
pub const BLOCK_HEADER_LEN: usize = 32;

/// Byte offsets of the block header fields (`docs/FORMAT.md`, "Engine: segments and blocks").
pub mod field {
    /// `u32` CRC-32 over bytes `4..block_size`, then the block's device offset (`u64` LE), then
    /// the format nonce (`u64` LE).
    pub const CHECKSUM: usize = 0;
    /// `[u8; 4]` magic `BSLG`.
    pub const MAGIC: usize = 4;
    /// `u64` sequence number of the batch this block belongs to.
    pub const SEQUENCE: usize = 8;
    /// `u32` position of this block within its batch (0 = first).
    pub const BLOCK_INDEX: usize = 16;
    /// `u32` number of blocks in the batch.
    pub const BLOCK_COUNT: usize = 20;
    /// `u32` payload bytes used in this block (the rest is zero padding).
    pub const PAYLOAD_LEN: usize = 24;
    /// `u32` reserved, zero.
    pub const RESERVED: usize = 28;
}

/// The decoded header of a log block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// The block's checksum (the batch chain is built from these).
    pub checksum: u32,
    /// Sequence number of its batch.
    pub sequence: u64,
    /// Position within the batch.
    pub block_index: u32,
    /// Blocks in the batch.
    pub block_count: u32,
    /// Payload bytes used in this block.
    pub payload_len: u32,
}

/// Why a block did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockDefect {
    /// No block magic: never written by this log (or overwritten by something else).
    NoMagic,
    /// The checksum does not match (bit rot, torn write, misdirected write, or a stale block of
    /// an earlier format).
    Checksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// Checksum fine but the header is inconsistent (a bug in the writer).
    Header,
}

impl std::fmt::Display for BlockDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockDefect::NoMagic => write!(f, "no block magic"),
            BlockDefect::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            BlockDefect::Header => write!(f, "inconsistent block header"),
        }
    }
}

fn checksum(block: &[u8], offset: u64, nonce: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&block[field::MAGIC..]);
    h.update(&offset.to_le_bytes());
    h.update(&nonce.to_le_bytes());
    h.finalize()
}

/// Payload capacity of a block of `block_size` bytes.
pub fn payload_capacity(block_size: usize) -> usize {
    block_size - BLOCK_HEADER_LEN
}

/// Writes the header of `block` (whose payload is already in place and zero padded) and seals it
/// for device offset `offset`. Returns the checksum.
pub fn seal(
    block: &mut [u8],
    offset: u64,
    nonce: u64,
    sequence: u64,
    index: u32,
    count: u32,
    payload_len: u32,
) -> u32 {
    let header = BlockHeader {
        checksum: 0,
        sequence,
        block_index: index,
        block_count: count,
        payload_len,
    };
    seal_with_magic(block, BLOCK_MAGIC, offset, nonce, &header)
}

/// [`seal`] for another kind of block (the state store's blocks carry magic `BSST`): writes
/// `header` (its `checksum` field is ignored) and `magic`, and returns the checksum.
pub fn seal_with_magic(
    block: &mut [u8],
    magic: [u8; 4],
    offset: u64,
    nonce: u64,
    header: &BlockHeader,
) -> u32 {
    let BlockHeader {
        sequence,
        block_index: index,
        block_count: count,
        payload_len,
        ..
    } = *header;
    assert!(
        index < count && payload_len as usize <= payload_capacity(block.len()),
        "block header out of range"
    );
    block[field::MAGIC..field::MAGIC + 4].copy_from_slice(&magic);
    put_u64(block, field::SEQUENCE, sequence);
    put_u32(block, field::BLOCK_INDEX, index);
    put_u32(block, field::BLOCK_COUNT, count);
    put_u32(block, field::PAYLOAD_LEN, payload_len);
    put_u32(block, field::RESERVED, 0);
    let sum = checksum(block, offset, nonce);
    put_u32(block, field::CHECKSUM, sum);
    sum
}

/// Verifies `block` as read from device offset `offset` and decodes its header.
pub fn verify(block: &[u8], offset: u64, nonce: u64) -> Result<BlockHeader, BlockDefect> {
    verify_with_magic(block, BLOCK_MAGIC, offset, nonce)
}

/// [`verify`] for a block of another kind, identified by `magic`.
pub fn verify_with_magic(
    block: &[u8],
    magic: [u8; 4],
    offset: u64,
    nonce: u64,
) -> Result<BlockHeader, BlockDefect> {
    if block[field::MAGIC..field::MAGIC + 4] != magic {
        return Err(BlockDefect::NoMagic);
    }
    let stored = get_u32(block, field::CHECKSUM);
    let computed = checksum(block, offset, nonce);
    if stored != computed {
        return Err(BlockDefect::Checksum { stored, computed });
    }
    let h = BlockHeader {
        checksum: stored,
        sequence: get_u64(block, field::SEQUENCE),
        block_index: get_u32(block, field::BLOCK_INDEX),
        block_count: get_u32(block, field::BLOCK_COUNT),
        payload_len: get_u32(block, field::PAYLOAD_LEN),
    };
    if h.block_index >= h.block_count || h.payload_len as usize > payload_capacity(block.len()) {
        return Err(BlockDefect::Header);
    }
    Ok(h)
}

/// The payload bytes of a verified block.
pub fn payload<'a>(block: &'a [u8], header: &BlockHeader) -> &'a [u8] {
    &block[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + header.payload_len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + 5].copy_from_slice(b"hello");
        seal(&mut b, 8192, 77, 5, 1, 3, 5);
        b
    }

    #[test]
    fn verifies_at_its_own_offset_only() {
        let b = sealed();
        let h = verify(&b, 8192, 77).expect("valid");
        assert_eq!((h.sequence, h.block_index, h.block_count), (5, 1, 3));
        assert_eq!(payload(&b, &h), b"hello");
        assert!(matches!(
            verify(&b, 8192 + 512, 77),
            Err(BlockDefect::Checksum { .. })
        ));
        assert!(
            matches!(verify(&b, 8192, 78), Err(BlockDefect::Checksum { .. })),
            "stale nonce accepted"
        );
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let b = sealed();
        for byte in 0..b.len() {
            for bit in 0..8 {
                let mut bad = b.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    verify(&bad, 8192, 77).is_err(),
                    "flip at {byte}.{bit} accepted"
                );
            }
        }
    }
}
