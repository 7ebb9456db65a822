//! Session lanes: the at-most-once identities of writes.
//!
//! A region keeps, per client id, only the last sequence it applied: a lower one is refused as
//! a duplicate, an equal one is answered with the first result. So one client id can carry
//! only one write at a time. A lane is a client id (random, nonzero) with its own increasing
//! sequence; a write holds a lane for its whole duration, retries included (each retry reuses
//! the write's id), and gives it back after. Lanes are created on demand up to a cap and reused
//! most-recently-freed first, which keeps the number of ids each region must remember small.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use transport::proto::WriteId;

use crate::backoff::random_u64;

#[derive(Debug)]
struct Lane {
    client_id: u64,
    // Invariant: greater than every sequence this lane has handed out.
    next_sequence: u64,
}

/// The lanes of one client.
#[derive(Debug)]
pub(crate) struct LanePool {
    free: Mutex<Vec<Lane>>,
    permits: Arc<Semaphore>,
}

/// A lane held by one write; given back on drop.
#[derive(Debug)]
pub(crate) struct LaneGuard<'a> {
    pool: &'a LanePool,
    lane: Option<Lane>,
    id: WriteId,
    _permit: OwnedSemaphorePermit,
}

impl LanePool {
    /// A pool of at most `lanes_max` lanes.
    pub fn new(lanes_max: usize) -> LanePool {
        assert!(lanes_max > 0);
        LanePool {
            free: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(lanes_max)),
        }
    }

    /// Takes a lane (waiting while all are busy) and the id of the write it carries.
    pub async fn acquire(&self) -> Option<LaneGuard<'_>> {
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok()?;
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        let mut lane = reused.unwrap_or_else(|| Lane {
            client_id: random_u64().max(1),
            next_sequence: 1,
        });
        let id = WriteId {
            client_id: lane.client_id,
            sequence: lane.next_sequence,
        };
        lane.next_sequence += 1;
        Some(LaneGuard {
            pool: self,
            lane: Some(lane),
            id,
            _permit: permit,
        })
    }

    /// Closes the pool: waiting and later writes get no lane.
    pub fn close(&self) {
        self.permits.close();
    }
}

impl LaneGuard<'_> {
    /// The id of the write holding the lane.
    pub fn id(&self) -> WriteId {
        self.id
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if let (Some(lane), Ok(mut free)) = (self.lane.take(), self.pool.free.lock()) {
            free.push(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[tokio::test]
    async fn a_lane_carries_one_write_at_a_time_with_rising_sequences() {
        let pool = LanePool::new(4);
        let a = pool.acquire().await.expect("lane");
        let b = pool.acquire().await.expect("lane");
        assert_ne!(a.id().client_id, b.id().client_id);
        assert_ne!(a.id().client_id, 0);
        let first = a.id();
        drop(a);
        let again = pool.acquire().await.expect("lane");
        assert_eq!(again.id().client_id, first.client_id, "freed lane reused");
        assert_eq!(again.id().sequence, first.sequence + 1);
    }

    #[tokio::test]
    async fn writes_beyond_the_cap_wait_for_a_free_lane() {
        let pool = LanePool::new(2);
        let a = pool.acquire().await.expect("lane");
        let b = pool.acquire().await.expect("lane");
        let waited = tokio::time::timeout(Duration::from_millis(50), pool.acquire()).await;
        assert!(waited.is_err(), "a third lane was handed out");
        let ids: HashSet<u64> = [a.id().client_id, b.id().client_id].into();
        drop(b);
        let c = pool.acquire().await.expect("lane");
        assert!(ids.contains(&c.id().client_id));
        drop(a);
        pool.close();
        assert!(pool.acquire().await.is_none());
    }
}
