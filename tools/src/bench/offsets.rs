//! Offsets of a device job: sequential, or random with every block visited once per pass (fio's
//! random map), without a table: block numbers come from a bijection on `[0, 2^k)` applied to a
//! counter, skipping values past the last block.

/// Generates block-aligned offsets over `blocks` blocks of `bs_bytes`, wrapping around.
#[derive(Debug, Clone)]
pub struct OffsetGen {
    blocks: u64,
    bs_bytes: u64,
    random: bool,
    counter: u64,
    /// `2^k - 1` for the smallest `2^k >= blocks`.
    mask: u64,
    half_bits: u32,
}

impl OffsetGen {
    /// Offsets over `blocks` blocks (at least 1) of `bs_bytes` each.
    pub fn new(blocks: u64, bs_bytes: u64, random: bool) -> OffsetGen {
        assert!(blocks > 0, "an offset generator needs at least one block");
        let bits = 64 - (blocks - 1).leading_zeros();
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        OffsetGen {
            blocks,
            bs_bytes,
            random,
            counter: 0,
            mask,
            half_bits: bits / 2 + 1,
        }
    }

    /// The next offset in bytes.
    pub fn next_offset(&mut self) -> u64 {
        if !self.random {
            let block = self.counter % self.blocks;
            self.counter = self.counter.wrapping_add(1);
            return block * self.bs_bytes;
        }
        loop {
            let block = self.scramble(self.counter & self.mask);
            self.counter = self.counter.wrapping_add(1);
            if block < self.blocks {
                return block * self.bs_bytes;
            }
        }
    }

    /// A bijection on `[0, mask]`: multiplications by odd constants and xor-shifts, each
    /// invertible modulo `2^k`.
    fn scramble(&self, mut x: u64) -> u64 {
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) & self.mask;
        x ^= x >> self.half_bits;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9) & self.mask;
        x ^= x >> self.half_bits;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_offsets_visit_every_block_once_per_pass() {
        for blocks in [1u64, 2, 3, 7, 64, 1000, 4097] {
            let mut gen = OffsetGen::new(blocks, 4096, true);
            let mut seen = vec![false; blocks as usize];
            for _ in 0..blocks {
                let block = (gen.next_offset() / 4096) as usize;
                assert!(!seen[block], "block {block} twice in one pass of {blocks}");
                seen[block] = true;
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn random_offsets_are_not_sequential() {
        let mut gen = OffsetGen::new(1 << 16, 4096, true);
        let firsts: Vec<u64> = (0..8).map(|_| gen.next_offset() / 4096).collect();
        assert_ne!(firsts, (0..8).collect::<Vec<u64>>());
    }

    #[test]
    fn sequential_offsets_wrap_around() {
        let mut gen = OffsetGen::new(3, 512, false);
        let got: Vec<u64> = (0..5).map(|_| gen.next_offset()).collect();
        assert_eq!(got, vec![0, 512, 1024, 0, 512]);
    }
}
