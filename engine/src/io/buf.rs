//! Block-aligned I/O buffers: standalone ones and a fixed pool carved out of one anonymous mapping.
//!
//! The pool's mapping is allocated once, at open, and never grows: `take` and `give` move a slot
//! index on a preallocated free list, so the data path allocates nothing. The `uring` backend
//! registers the whole mapping with the ring as one fixed buffer (index 0), and recognises its own
//! pool's buffers by [`AlignedBuf::pool_id`]. A buffer larger than a slot can be a span of
//! adjacent free slots ([`BufPool::take_span`]): it lies inside the same registered mapping, so
//! the log's batches a little over a slot (64 entries of 4 KiB) stay fixed buffers without
//! pinning more memory.
//!
//! A pool buffer that is dropped instead of given back returns to its pool's free list anyway (the
//! free list is shared with every buffer of the pool), and the mapping lives until the pool and all
//! of its buffers are gone, so a buffer can never dangle.

use std::alloc::Layout;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::MmapMut;

use super::IoError;

/// Source of unique pool ids (0 means "standalone").
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// A block-aligned buffer, allocated from a [`BufPool`] or standalone ([`AlignedBuf::new`]).
pub struct AlignedBuf {
    ptr: *mut u8,
    // Invariant: len <= capacity; ptr is aligned to `align` and valid for `capacity` bytes.
    len: usize,
    capacity: usize,
    align: usize,
    origin: Origin,
}

enum Origin {
    /// Owned heap allocation with this layout.
    Standalone(Layout),
    /// Slots `slot..slot + count` of a pool; the Arc keeps the mapping alive.
    Pool {
        shared: Arc<PoolShared>,
        slot: u32,
        count: u32,
    },
}

// SAFETY: an AlignedBuf is the unique owner of its bytes (heap allocation or pool slot; a slot is
// handed out to at most one buffer at a time), so moving it to another thread is sound.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A standalone zeroed buffer of `len` bytes aligned to `align`.
    ///
    /// Panics if `align` is not a power of two or `len` is not a multiple of `align` (programmer
    /// errors).
    pub fn new(len: usize, align: usize) -> AlignedBuf {
        assert!(
            align.is_power_of_two(),
            "alignment {align} is not a power of two"
        );
        assert!(
            len % align == 0,
            "length {len} is not a multiple of {align}"
        );
        let size = len.max(align);
        let layout = Layout::from_size_align(size, align).expect("size and alignment were checked");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf {
            ptr,
            len,
            capacity: size,
            align,
            origin: Origin::Standalone(layout),
        }
    }

    /// A standalone buffer holding a copy of `data`, zero-padded up to a multiple of `align`.
    pub fn from_slice(data: &[u8], align: usize) -> AlignedBuf {
        let len = data.len().div_ceil(align) * align;
        let mut buf = AlignedBuf::new(len, align);
        buf.as_mut_slice()[..data.len()].copy_from_slice(data);
        buf
    }

    /// Current length in bytes (what a read or write transfers).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes available in the allocation.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Alignment of the start of the buffer, in bytes.
    pub fn align(&self) -> usize {
        self.align
    }

    /// Set the length. Panics if `len > capacity()`.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "set_len({len}) beyond capacity {}",
            self.capacity
        );
        self.len = len;
    }

    /// The first `len()` bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for `capacity >= len` bytes and uniquely owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The first `len()` bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for `capacity >= len` bytes and uniquely owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Raw pointer to the first byte (for the kernel).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Raw mutable pointer to the first byte (for the kernel).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// Id of the pool this buffer came from, or `None` for a standalone buffer.
    pub fn pool_id(&self) -> Option<u64> {
        match &self.origin {
            Origin::Standalone(_) => None,
            Origin::Pool { shared, .. } => Some(shared.id),
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        match &self.origin {
            Origin::Standalone(layout) => {
                // SAFETY: ptr was returned by alloc_zeroed with exactly this layout.
                unsafe { std::alloc::dealloc(self.ptr, *layout) }
            }
            Origin::Pool {
                shared,
                slot,
                count,
            } => shared.release(*slot, *count),
        }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("align", &self.align)
            .field("pool_id", &self.pool_id())
            .finish()
    }
}

/// State shared between a pool and its outstanding buffers.
struct PoolShared {
    id: u64,
    // Kept alive for the raw pointers into it; never dereferenced through the map again.
    _map: MmapMut,
    // Free slot indices. Capacity = slot count, allocated at creation, so pushes never allocate.
    free: Mutex<Vec<u32>>,
}

// SAFETY: the mapping is only accessed through the raw pointers of uniquely owned slots; the free
// list is behind a mutex.
unsafe impl Send for PoolShared {}
// SAFETY: as above; shared access only touches `id` (immutable) and the mutex.
unsafe impl Sync for PoolShared {}

impl PoolShared {
    fn release(&self, slot: u32, count: u32) {
        // A poisoned lock only means another thread panicked while pushing/popping a u32.
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.extend(slot..slot + count);
    }
}

/// A fixed set of equal, aligned buffer slots carved out of one anonymous mapping.
pub struct BufPool {
    shared: Arc<PoolShared>,
    base: *mut u8,
    slot_size_bytes: usize,
    slot_count: usize,
    align: usize,
}

// SAFETY: `base` points into the mapping owned by `shared`; slots are handed out uniquely.
unsafe impl Send for BufPool {}

impl BufPool {
    /// Map `slot_size_bytes * slot_count` bytes and cut them into slots aligned to `align`.
    ///
    /// Errors: `Unaligned` when `align` is not a power of two or the slot size is not a positive
    /// multiple of it; `Os` when the mapping fails.
    pub fn new(
        slot_size_bytes: usize,
        slot_count: usize,
        align: usize,
    ) -> Result<BufPool, IoError> {
        if !align.is_power_of_two() {
            return Err(IoError::Unaligned {
                what: "pool alignment",
                value: align as u64,
                align: 2,
            });
        }
        if slot_size_bytes == 0 || slot_size_bytes % align != 0 {
            let value = slot_size_bytes as u64;
            return Err(IoError::Unaligned {
                what: "pool slot size",
                value,
                align: align as u64,
            });
        }
        let slot_count_u32 = u32::try_from(slot_count).map_err(|_| IoError::OutOfRange {
            offset: 0,
            len: slot_count as u64,
            size: u64::from(u32::MAX),
        })?;
        let total = slot_size_bytes
            .checked_mul(slot_count)
            .and_then(|t| t.checked_add(align))
            .ok_or(IoError::OutOfRange {
                offset: 0,
                len: u64::MAX,
                size: usize::MAX as u64,
            })?;
        let mut map = MmapMut::map_anon(total).map_err(|source| IoError::Os {
            op: "mmap buffer pool",
            offset: 0,
            source,
        })?;
        let raw = map.as_mut_ptr();
        let base = raw.wrapping_add(raw.align_offset(align));
        let mut free = Vec::with_capacity(slot_count);
        free.extend((0..slot_count_u32).rev());
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(PoolShared {
            id,
            _map: map,
            free: Mutex::new(free),
        });
        Ok(BufPool {
            shared,
            base,
            slot_size_bytes,
            slot_count,
            align,
        })
    }

    /// Take a free slot (length = slot size, contents unspecified), or `None` if all are out.
    pub fn take(&mut self) -> Option<AlignedBuf> {
        let slot = {
            let mut free = self.shared.free.lock().unwrap_or_else(|e| e.into_inner());
            free.pop()?
        };
        let ptr = self.base.wrapping_add(slot as usize * self.slot_size_bytes);
        Some(AlignedBuf {
            ptr,
            len: self.slot_size_bytes,
            capacity: self.slot_size_bytes,
            align: self.align,
            origin: Origin::Pool {
                shared: Arc::clone(&self.shared),
                slot,
                count: 1,
            },
        })
    }

    /// Take a buffer of at least `len` bytes made of adjacent free slots (one slot when `len`
    /// fits one), or `None` if no run of enough adjacent slots is free or the run would take
    /// more than a quarter of the pool. A span lies inside the pool's mapping, so the `uring`
    /// backend writes it as a fixed buffer like any slot; it returns to the free list as a whole.
    /// Allocates nothing (the free list is sorted in place to find the run).
    pub fn take_span(&mut self, len: usize) -> Option<AlignedBuf> {
        let count = len.div_ceil(self.slot_size_bytes).max(1);
        if count == 1 {
            return self.take();
        }
        if count > self.slot_count / 4 {
            return None;
        }
        let slot = {
            let mut free = self.shared.free.lock().unwrap_or_else(|e| e.into_inner());
            // Descending, so `take` (which pops the end) keeps handing out low slots first; in
            // that order a run of adjacent slots `s..s + count` reads s+count-1, ..., s, and the
            // last such window is the lowest run.
            free.sort_unstable_by(|a, b| b.cmp(a));
            let at = free
                .windows(count)
                .rposition(|w| w[0] - w[count - 1] == count as u32 - 1)?;
            let first = free[at + count - 1];
            free.drain(at..at + count);
            first
        };
        let ptr = self.base.wrapping_add(slot as usize * self.slot_size_bytes);
        let size = count * self.slot_size_bytes;
        Some(AlignedBuf {
            ptr,
            len: size,
            capacity: size,
            align: self.align,
            origin: Origin::Pool {
                shared: Arc::clone(&self.shared),
                slot,
                count: count as u32,
            },
        })
    }

    /// Return a buffer. Pool buffers go back to their pool's free list (dropping one does the
    /// same); standalone buffers are freed.
    pub fn give(&mut self, buf: AlignedBuf) {
        drop(buf);
    }

    /// Size of every slot in bytes.
    pub fn slot_size_bytes(&self) -> usize {
        self.slot_size_bytes
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Number of slots currently free.
    pub fn free_count(&self) -> usize {
        self.shared
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Alignment of every slot.
    pub fn align(&self) -> usize {
        self.align
    }

    /// Unique id of this pool (see [`AlignedBuf::pool_id`]).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Start of the slot area and its length in bytes (what `uring` registers as fixed buffer 0).
    pub fn region(&self) -> (*mut u8, usize) {
        (self.base, self.slot_size_bytes * self.slot_count)
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("id", &self.shared.id)
            .field("slot_size_bytes", &self.slot_size_bytes)
            .field("slot_count", &self.slot_count)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_slots_are_aligned_distinct_and_come_back() {
        let mut pool = BufPool::new(8192, 3, 4096).unwrap();
        let mut a = pool.take().unwrap();
        let b = pool.take().unwrap();
        let c = pool.take().unwrap();
        assert!(pool.take().is_none());
        for buf in [&a, &b, &c] {
            assert_eq!(buf.as_ptr() as usize % 4096, 0);
            assert_eq!(buf.len(), 8192);
            assert_eq!(buf.pool_id(), Some(pool.id()));
        }
        assert_ne!(a.as_ptr(), b.as_ptr());
        a.as_mut_slice().fill(7);
        pool.give(a);
        drop(b);
        assert_eq!(pool.free_count(), 2);
        drop(pool);
        assert_eq!(c.as_slice().len(), 8192); // the mapping outlives the pool
    }

    #[test]
    fn spans_are_adjacent_slots_inside_the_mapping_and_come_back_whole() {
        let mut pool = BufPool::new(4096, 8, 4096).unwrap();
        let (base, region_len) = pool.region();
        let one = pool.take_span(100).unwrap();
        assert_eq!(one.len(), 4096);
        // Slot 0 is out: the first free run of two is slots 1 and 2.
        let mut two = pool.take_span(4096 + 1).unwrap();
        assert_eq!((two.len(), two.pool_id()), (8192, Some(pool.id())));
        assert_eq!(two.as_ptr() as usize - base as usize, 4096);
        two.as_mut_slice().fill(9);
        assert!(two.as_ptr() as usize + two.len() <= base as usize + region_len);
        assert!(pool.take_span(3 * 4096).is_none(), "more than a quarter");
        // Take slots 3..=7, then free 4 and 6 only: two free slots, no run of two.
        let mut held: Vec<_> = (0..5).map(|_| pool.take().unwrap()).collect();
        assert!(pool.take().is_none());
        drop(held.remove(3)); // slot 6
        drop(held.remove(1)); // slot 4
        assert_eq!(pool.free_count(), 2);
        assert!(pool.take_span(8192).is_none());
        drop(two);
        assert_eq!(pool.free_count(), 4);
        let again = pool.take_span(8192).unwrap();
        assert_eq!(again.as_ptr() as usize - base as usize, 4096);
        drop((one, held, again));
        assert_eq!(pool.free_count(), 8);
    }

    #[test]
    fn standalone_is_zeroed_and_aligned() {
        let buf = AlignedBuf::new(4096 * 2, 4096);
        assert_eq!(buf.as_ptr() as usize % 4096, 0);
        assert!(buf.as_slice().iter().all(|&b| b == 0));
        assert_eq!(buf.pool_id(), None);
        let copy = AlignedBuf::from_slice(b"abc", 512);
        assert_eq!(copy.len(), 512);
        assert_eq!(&copy.as_slice()[..4], b"abc\0");
    }

    #[test]
    fn bad_pool_parameters_are_errors() {
        assert!(matches!(
            BufPool::new(1000, 2, 4096),
            Err(IoError::Unaligned { .. })
        ));
        assert!(matches!(
            BufPool::new(4096, 2, 3000),
            Err(IoError::Unaligned { .. })
        ));
    }
}
