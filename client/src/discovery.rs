//! Refreshing the region cache from the nodes: every known node (the configured endpoints and
//! the addresses learned since) is asked for its `Status`, concurrently. A node's status lists
//! its peers, so it tells which stores the node serves (the store of each local peer), every
//! region it holds with its epoch and peers, and who it believes leads each. When several nodes
//! disagree on a leader, the view of the highest term wins, a leader's own word first. Once one
//! node answered, the others get a bounded grace (see [`STRAGGLER_GRACE_MIN`]): a killed node
//! answers nothing and closes nothing, and must not hold a failover's every refresh for a
//! whole attempt timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::debug;
use transport::proto::{Request, Response, StoreStatus};

use crate::error::{classify_transport, connection_lost, AttemptFailure};
use crate::router::Router;
use crate::ClientError;

/// The rank of a leader report: its term, then whether the leader itself reported.
type Rank = (u64, bool);

/// How long a refresh waits for the other nodes once one answered: at least this long, ...
const STRAGGLER_GRACE_MIN: Duration = Duration::from_millis(100);
/// ... or this many times as long as the first answer took. A healthy node answers a status
/// within a millisecond or two; a node that stays silent this long is likely dead (a killed
/// node closes no connection), and waiting for it to the attempt's timeout would hold every
/// call during a failover for that long without learning anything.
const STRAGGLER_GRACE_FACTOR: u32 = 4;

impl Router {
    /// Refreshes the cache unless another caller's refresh finished while this one waited.
    pub(crate) async fn refresh(
        self: &Arc<Self>,
        key: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(), AttemptFailure> {
        let generation = self.refresh_generation.load(Ordering::Acquire);
        let _only = self.refresh_lock.lock().await;
        if self.refresh_generation.load(Ordering::Acquire) != generation {
            return Ok(());
        }
        let r = self.refresh_now(key, timeout).await;
        self.refresh_generation.fetch_add(1, Ordering::AcqRel);
        r
    }

    /// Asks every known node for its status, each within `timeout`; returns as soon as the
    /// leader of `key`'s region reported, else when every node answered or failed. Fails only
    /// if no node answered (with `TlsRefused` if a node refused this client's certificate).
    pub(crate) async fn refresh_now(
        self: &Arc<Self>,
        key: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(), AttemptFailure> {
        let mut nodes = self.config.endpoints.clone();
        nodes.extend(self.with_cache(|c| c.node_addrs()));
        nodes.sort();
        nodes.dedup();
        let mut tasks = JoinSet::new();
        for addr in nodes {
            let router = Arc::clone(self);
            tasks.spawn(async move { (addr, router.status_of(addr, timeout).await) });
        }
        let mut ranks: HashMap<u64, Rank> = HashMap::new();
        let mut answered = false;
        let mut failures: Vec<String> = Vec::new();
        let mut refused: Option<ClientError> = None;
        let started = Instant::now();
        // Once a node answered, the others get a bounded grace rather than the whole timeout.
        let mut grace_end: Option<Instant> = None;
        loop {
            let next = match grace_end {
                None => tasks.join_next().await,
                Some(end) => match tokio::time::timeout_at(end.into(), tasks.join_next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        failures.push(format!("{} nodes silent", tasks.len()));
                        break;
                    }
                },
            };
            let Some(joined) = next else {
                break;
            };
            let Ok((addr, result)) = joined else {
                continue;
            };
            match result {
                Ok(status) => {
                    answered = true;
                    grace_end.get_or_insert_with(|| {
                        Instant::now()
                            + (started.elapsed() * STRAGGLER_GRACE_FACTOR).max(STRAGGLER_GRACE_MIN)
                    });
                    let led = self.merge_status(addr, &status, &mut ranks);
                    if key.is_some_and(|k| led.iter().any(|r| self.region_holds(*r, k))) {
                        break;
                    }
                }
                Err(AttemptFailure::Final(e)) => {
                    failures.push(e.to_string());
                    refused.get_or_insert(e);
                }
                Err(AttemptFailure::Retry(why) | AttemptFailure::Skipped(why)) => {
                    failures.push(why)
                }
            }
        }
        debug!(
            answered,
            failures = failures.len(),
            "region cache refreshed"
        );
        match (answered, refused) {
            (true, _) => Ok(()),
            (false, Some(e)) => Err(AttemptFailure::Final(e)),
            (false, None) => Err(AttemptFailure::Retry(format!(
                "no node answered: {}",
                failures.join("; ")
            ))),
        }
    }

    fn region_holds(&self, region_id: u64, key: &[u8]) -> bool {
        let g = self.cache.read().unwrap_or_else(|p| p.into_inner());
        g.region(region_id).is_some_and(|r| r.contains(key))
    }

    /// The status of the node at `addr`.
    async fn status_of(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<StoreStatus, AttemptFailure> {
        let conn = self.conns.get(addr, timeout).await?;
        match conn.call(0, &Request::Status, timeout).await {
            Ok(Response::Status(s)) => Ok(s),
            Ok(other) => Err(AttemptFailure::Retry(format!(
                "{addr}: unexpected answer to status: {other:?}"
            ))),
            Err(e) => {
                if connection_lost(&e) {
                    self.conns.discard(addr, &conn);
                }
                Err(classify_transport(addr, &e))
            }
        }
    }

    /// Takes one node's status into the cache; returns the regions whose leader reported.
    fn merge_status(
        &self,
        addr: SocketAddr,
        status: &StoreStatus,
        ranks: &mut HashMap<u64, Rank>,
    ) -> Vec<u64> {
        let mut led = Vec::new();
        self.with_cache(|c| {
            if status.store_id != 0 {
                c.set_store_addr(status.store_id, addr);
                c.heard_from(status.store_id);
            }
            for r in &status.regions {
                let me = r
                    .info
                    .peers
                    .iter()
                    .find(|p| p.peer_id == r.peer_id)
                    .copied();
                if let Some(p) = me {
                    c.set_store_addr(p.store_id, addr);
                    c.heard_from(p.store_id);
                }
                let mut info = r.info.clone();
                if r.is_leader {
                    info.leader = me;
                    led.push(r.info.region_id);
                }
                let rank = (r.term, r.is_leader);
                let best = ranks.entry(r.info.region_id).or_insert(rank);
                if rank < *best {
                    // An older view: its regions may still teach us ranges, not the leader.
                    info.leader = None;
                } else {
                    *best = rank;
                }
                let taken = c.insert(&info);
                if taken && info.leader.is_some() {
                    c.set_leader(info.region_id, info.leader.map(|p| p.store_id));
                }
            }
        });
        led
    }
}
