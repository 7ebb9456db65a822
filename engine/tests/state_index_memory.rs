//! Measures the index's memory per key with a counting global allocator (100k short keys, then
//! 20k keys too long to store inline) and checks `estimate_bytes` (what
//! `StateStore::index_memory_bytes` reports) stays within 30% of it. Prints the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use engine::state::index::{estimate_bytes, Key, RegionIndex};
use engine::state::ValueLoc;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn measure(count: usize, key: impl Fn(usize) -> Vec<u8>) -> (f64, f64) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut map = RegionIndex::new();
    let mut heap = 0;
    // A pseudo-random insertion order, as client keys arrive.
    for i in 0..count {
        let k = Key::new(&key((i * 7919) % count));
        heap += k.heap_bytes();
        let loc = ValueLoc {
            segment: 1,
            offset: i as u32,
            len: 100,
        };
        map.insert(k, loc);
    }
    let used = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64;
    let estimate = estimate_bytes(map.len(), heap) as f64;
    drop(map);
    (used / count as f64, estimate / count as f64)
}

#[test]
fn index_memory_per_key_matches_the_estimate() {
    let (short, short_est) = measure(100_000, |i| format!("key{i:08}").into_bytes());
    let (long, long_est) = measure(20_000, |i| format!("a-long-key-{i:032}").into_bytes());
    println!("index bytes/key: 11-byte keys {short:.1} (estimate {short_est:.1}); 43-byte keys {long:.1} (estimate {long_est:.1})");
    for (m, e) in [(short, short_est), (long, long_est)] {
        assert!(
            (e - m).abs() / m < 0.3,
            "estimate {e:.1} vs measured {m:.1} bytes/key"
        );
    }
}
