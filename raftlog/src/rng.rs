//! A small seeded pseudo-random generator (splitmix64), so that election timeouts are
//! reproducible: the seed comes from [`crate::Config::rng_seed`], never from the OS.

/// A splitmix64 generator. Not cryptographic; only used to spread election timeouts.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for node `id` seeded with `seed`: nodes sharing a seed still draw different
    /// sequences, because the id is mixed in.
    pub(crate) fn new(seed: u64, id: u64) -> Rng {
        let mut rng = Rng {
            state: seed ^ id.wrapping_mul(0xA076_1D64_78BD_642F),
        };
        // Discard one output so that nearby seeds diverge at once.
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[low, high)`.
    ///
    /// # Panics
    /// If the range is empty.
    pub(crate) fn gen_range(&mut self, low: usize, high: usize) -> usize {
        assert!(low < high, "empty range {low}..{high}");
        let span = (high - low) as u64;
        low + (self.next_u64() % span) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence_and_ids_differ() {
        let mut a = Rng::new(7, 1);
        let mut b = Rng::new(7, 1);
        let mut c = Rng::new(7, 2);
        let sa: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let sb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let sc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(sa, sb);
        assert_ne!(sa, sc);
    }

    #[test]
    fn gen_range_stays_in_bounds_and_covers_it() {
        let mut r = Rng::new(42, 3);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.gen_range(10, 20);
            assert!((10..20).contains(&v));
            seen[v - 10] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
