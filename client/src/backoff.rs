//! Exponential backoff with jitter between attempts, and the small random source it and the
//! session ids draw from.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A random u64 (not cryptographic): SplitMix64 over a per-process random seed and a counter.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(n);
    let mut z = h.finish().wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The delays between the attempts of one call: the n-th ceiling is `initial * 2^n`, capped at
/// `max`; each delay is drawn from `[ceiling / 2, ceiling]` so that clients that failed together
/// do not retry together.
#[derive(Debug)]
pub(crate) struct Backoff {
    max: Duration,
    // Invariant: ceiling is within [initial, max].
    ceiling: Duration,
}

impl Backoff {
    /// A backoff starting at `initial`. Requires `initial <= max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        assert!(initial <= max, "backoff initial {initial:?} > max {max:?}");
        Backoff {
            max,
            ceiling: initial,
        }
    }

    /// The next delay, with `random` choosing the jitter.
    pub(crate) fn next_with(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let half = ceiling / 2;
        let span_ns = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span_ns == 0 {
            0
        } else {
            random % (span_ns + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.next_with(random_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_stay_in_the_jitter_band() {
        let mut b = Backoff::new(10 * MS, 500 * MS);
        let ceilings = [10, 20, 40, 80, 160, 320, 500, 500, 500];
        for (n, c) in ceilings.iter().enumerate() {
            let d = b.next_with(random_u64());
            let c = *c * MS;
            assert!(
                d >= c / 2 && d <= c,
                "attempt {n}: {d:?} outside [{:?}, {c:?}]",
                c / 2
            );
        }
    }

    #[test]
    fn jitter_spans_the_band() {
        let mut lo = Backoff::new(100 * MS, 100 * MS);
        assert_eq!(lo.next_with(0), 50 * MS);
        let mut hi = Backoff::new(100 * MS, 100 * MS);
        let span = (50 * MS).as_nanos() as u64;
        assert_eq!(hi.next_with(span), 100 * MS);
        assert_eq!(hi.next_with(span + 1), 50 * MS, "wraps within the band");
    }

    #[test]
    fn random_values_differ() {
        let v: std::collections::HashSet<u64> = (0..100).map(|_| random_u64()).collect();
        assert_eq!(v.len(), 100);
    }
}
