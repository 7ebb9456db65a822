//! Flow control for a follower in the replicate state: the appends sent but not yet
//! acknowledged, bounded both by message count and by bytes.

use std::collections::VecDeque;

/// The `MsgAppend`s in flight to one follower, oldest first, as `(last_index, bytes)`.
///
/// The leader stops sending (the progress is paused) when [`Inflights::full`]: either the count
/// cap is reached or, with a byte cap, the bytes in flight reach it. A single message larger
/// than the byte cap is still allowed when nothing else is in flight, so progress is never
/// blocked for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inflights {
    // Invariant: `last_index` values ascend from front to back.
    buffer: VecDeque<(u64, u64)>,
    // Invariant: `bytes_total` is the sum of the bytes in `buffer`.
    bytes_total: u64,
    count_max: usize,
    // 0 = no byte limit.
    bytes_max: u64,
}

impl Inflights {
    /// An empty window allowing `cap_count` messages and `cap_bytes` bytes (0: no byte limit).
    ///
    /// # Panics
    /// If `cap_count` is 0: nothing could ever be sent.
    pub fn new(cap_count: usize, cap_bytes: u64) -> Inflights {
        assert!(cap_count > 0, "inflight message cap must be positive");
        // The buffer grows on demand: many idle groups must not each hold a full window.
        Inflights {
            buffer: VecDeque::new(),
            bytes_total: 0,
            count_max: cap_count,
            bytes_max: cap_bytes,
        }
    }

    /// Whether no more messages may be sent.
    pub fn full(&self) -> bool {
        self.buffer.len() >= self.count_max
            || (self.bytes_max > 0 && self.bytes_total >= self.bytes_max)
    }

    /// Records a sent append ending at `last_index` carrying `bytes` bytes of entries.
    ///
    /// # Panics
    /// If the window is full, or `last_index` is below the newest in flight: the caller must
    /// check [`Inflights::full`] and send in index order.
    pub fn add(&mut self, last_index: u64, bytes: u64) {
        assert!(
            !self.full(),
            "cannot add to a full inflights window ({} msgs, {} bytes)",
            self.count(),
            self.bytes()
        );
        if let Some(&(newest, _)) = self.buffer.back() {
            assert!(
                newest <= last_index,
                "inflight index {last_index} added after {newest}"
            );
        }
        self.buffer.push_back((last_index, bytes));
        self.bytes_total += bytes;
    }

    /// Frees every message whose last index is at or below `index` (acknowledged).
    pub fn free_to(&mut self, index: u64) {
        while let Some(&(last, bytes)) = self.buffer.front() {
            if last > index {
                break;
            }
            self.buffer.pop_front();
            self.bytes_total -= bytes;
        }
    }

    /// Frees the oldest message (a heartbeat response proves the follower is alive).
    pub fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.buffer.pop_front() {
            self.bytes_total -= bytes;
        }
    }

    /// Forgets every message in flight.
    pub fn reset(&mut self) {
        self.buffer.clear();
        self.bytes_total = 0;
    }

    /// Number of messages in flight.
    pub fn count(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes_total
    }

    /// The count cap.
    pub fn cap_count(&self) -> usize {
        self.count_max
    }

    /// The byte cap (0: none).
    pub fn cap_bytes(&self) -> u64 {
        self.bytes_max
    }

    /// Changes the caps (after a config change). Messages already in flight stay recorded; the
    /// window is simply full until enough of them are freed.
    ///
    /// # Panics
    /// If `cap_count` is 0.
    pub fn set_cap(&mut self, cap_count: usize, cap_bytes: u64) {
        assert!(cap_count > 0, "inflight message cap must be positive");
        self.count_max = cap_count;
        self.bytes_max = cap_bytes;
    }
}
