//! The router: sends one request to the leader of a key's region, follows `NotLeader` and
//! `EpochNotMatch` hints, and retries retryable failures with backoff until the call's
//! deadline or its attempts run out.
//!
//! One call is a loop of attempts. An attempt routes the key through the cache (refreshing it
//! from the nodes when the region or its leader is unknown), gets the leader node's connection,
//! sends the request and classifies the answer:
//! - success, or a final error: the call ends;
//! - a hint that fixes the cache (a leader hint, the current regions, a missing region): the
//!   next attempt starts at once;
//! - anything else retryable (no leader, a dropped proposal, a busy or stopping store, a lost
//!   connection, an attempt timeout): the next attempt starts after a backoff.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;
use transport::proto::{Request, Response, ResponseError};
use transport::TransportError;

use crate::backoff::Backoff;
use crate::cache::{Lookup, RegionCache, Route};
use crate::connections::Connections;
use crate::error::{classify_transport, connection_lost, AttemptFailure};
use crate::{ClientConfig, ClientError};

/// Why an attempt is to be retried.
#[derive(Debug)]
pub(crate) struct Retry {
    pub reason: String,
    /// Set when the key's region had no leader.
    pub no_leader: Option<u64>,
    /// Retry at once (the cache was just corrected) rather than after a backoff.
    pub now: bool,
    /// Whether the attempt counts against `max_attempts` (it sent a request or tried a
    /// connection; waiting for a region to have a leader does not, the deadline bounds it).
    pub counts: bool,
}

impl Retry {
    pub fn later(reason: impl Into<String>) -> Retry {
        Retry {
            reason: reason.into(),
            no_leader: None,
            now: false,
            counts: true,
        }
    }

    fn now(reason: impl Into<String>) -> Retry {
        Retry {
            now: true,
            ..Retry::later(reason)
        }
    }

    fn no_leader(region_id: u64) -> Retry {
        Retry {
            no_leader: Some(region_id),
            ..Retry::later(format!("region {region_id} has no known leader"))
        }
    }

    /// Waiting for the cache to learn a leader: not counted as an attempt.
    fn waiting(mut self) -> Retry {
        self.counts = false;
        self
    }
}

/// The outcome of one attempt.
pub(crate) enum Step<T> {
    Done(T),
    Final(ClientError),
    Again(Retry),
}

impl<T> From<AttemptFailure> for Step<T> {
    fn from(f: AttemptFailure) -> Step<T> {
        match f {
            AttemptFailure::Final(e) => Step::Final(e),
            AttemptFailure::Retry(reason) => Step::Again(Retry::later(reason)),
            AttemptFailure::Skipped(reason) => Step::Again(Retry::later(reason).waiting()),
        }
    }
}

/// What the caller's answer handler is told beside the response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    /// Whether an earlier attempt of this call sent its request (a write's retry then may find
    /// its id already applied).
    pub before: bool,
}

/// Routes and retries requests; shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct Router {
    pub config: ClientConfig,
    pub cache: RwLock<RegionCache>,
    pub conns: Connections,
    /// Held while the cache is refreshed from the nodes: one refresh at a time.
    pub refresh_lock: tokio::sync::Mutex<()>,
    /// Bumped by every refresh; a caller that waited for another's refresh does not repeat it.
    pub refresh_generation: AtomicU64,
    pub closed: AtomicBool,
}

impl Router {
    pub fn new(config: ClientConfig) -> Router {
        Router {
            conns: Connections::new(config.tls.clone()),
            config,
            cache: RwLock::new(RegionCache::default()),
            refresh_lock: tokio::sync::Mutex::new(()),
            refresh_generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the cache. A poisoned lock (a panic while it was held) still holds a
    /// consistent cache: every mutation is a single map operation or a sequence of them that
    /// leaves it valid at each step.
    pub fn with_cache<R>(&self, f: impl FnOnce(&mut RegionCache) -> R) -> R {
        let mut g = self.cache.write().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn lookup(&self, key: &[u8]) -> Lookup {
        let g = self.cache.read().unwrap_or_else(|p| p.into_inner());
        g.lookup(key)
    }

    /// Runs one call: `request` builds the request for a route, `answer` turns a response
    /// (or a final server error) into the result. Ends by `deadline`.
    pub async fn run<T>(
        self: &Arc<Self>,
        key: &[u8],
        deadline: Instant,
        mut request: impl FnMut(&Route) -> Request,
        mut answer: impl FnMut(&Route, Response, Sent) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut attempts = 0u32;
        // Invariant: counted <= attempts.
        let mut counted = 0u32;
        let mut sent = false;
        let mut last = Retry::later("no attempt made");
        // The route of the attempt under way, once its request is sent.
        let mut asked: Option<Route> = None;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(ClientError::Closed);
            }
            if counted >= self.config.max_attempts {
                return Err(exhausted(counted, last));
            }
            attempts += 1;
            let now = Instant::now();
            let attempt_timeout = self.config.attempt_timeout.min(deadline - now);
            let attempt = self.attempt(
                key,
                attempt_timeout,
                &mut request,
                &mut answer,
                (&mut sent, &mut asked),
            );
            let Ok(step) = tokio::time::timeout_at(deadline, attempt).await else {
                if let Some(route) = asked {
                    self.suspect_leader(&route);
                }
                return Err(ClientError::Timeout {
                    elapsed: started.elapsed(),
                    attempts,
                    last_error: format!("attempt {attempts} unfinished; before: {}", last.reason),
                });
            };
            match step {
                Step::Done(t) => return Ok(t),
                Step::Final(e) => return Err(e),
                Step::Again(retry) => {
                    counted += u32::from(retry.counts);
                    debug!(attempt = attempts, reason = %retry.reason, "retrying");
                    // A corrected cache is retried at once, but not twice in a row: hints
                    // that contradict each other (a leadership moving) must not spin.
                    let pause = if retry.now && !last.now {
                        Duration::ZERO
                    } else {
                        backoff.next_delay()
                    };
                    last = retry;
                    if Instant::now() + pause >= deadline {
                        tokio::time::sleep_until(deadline).await;
                        return Err(ClientError::Timeout {
                            elapsed: started.elapsed(),
                            attempts,
                            last_error: last.reason,
                        });
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// One attempt of a call.
    async fn attempt<T>(
        self: &Arc<Self>,
        key: &[u8],
        timeout: Duration,
        request: &mut impl FnMut(&Route) -> Request,
        answer: &mut impl FnMut(&Route, Response, Sent) -> Result<T, ClientError>,
        (sent, asked): (&mut bool, &mut Option<Route>),
    ) -> Step<T> {
        *asked = None;
        let route = match self.route(key, timeout).await {
            Ok(r) => r,
            Err(step) => return step,
        };
        let conn = match self.conns.get(route.addr, timeout).await {
            Ok(c) => c,
            Err(f) => {
                self.with_cache(|c| c.set_leader(route.region_id, None));
                return f.into();
            }
        };
        let req = request(&route);
        let before = Sent { before: *sent };
        *sent = true;
        *asked = Some(route.clone());
        match conn.call(route.store_id, &req, timeout).await {
            Ok(Response::Error(e)) if e.is_retryable() => Step::Again(self.on_error(&route, e)),
            Ok(resp) => match answer(&route, resp, before) {
                Ok(t) => Step::Done(t),
                Err(e) => Step::Final(e),
            },
            Err(e) => {
                if connection_lost(&e) {
                    self.conns.discard(route.addr, &conn);
                }
                if matches!(e, TransportError::Timeout(_)) {
                    self.suspect_leader(&route);
                }
                self.with_cache(|c| c.set_leader(route.region_id, None));
                classify_transport(route.addr, &e).into()
            }
        }
    }

    /// The route of `key`, refreshing the cache when it cannot tell.
    async fn route<T>(self: &Arc<Self>, key: &[u8], timeout: Duration) -> Result<Route, Step<T>> {
        if let Lookup::Route(r) = self.lookup(key) {
            return Ok(r);
        }
        self.refresh(Some(key), timeout).await.map_err(Step::from)?;
        match self.lookup(key) {
            Lookup::Route(r) => Ok(r),
            Lookup::NoLeader { region_id } => {
                Err(Step::Again(Retry::no_leader(region_id).waiting()))
            }
            Lookup::Unknown => Err(Step::Again(
                Retry::later("no known region holds the key").waiting(),
            )),
        }
    }

    /// Takes `route`'s leader out of routing after its node left a request unanswered until
    /// the attempt's timeout or the call's deadline (see [`RegionCache::suspect`]): the next
    /// calls poll the nodes for a leader rather than wait out their deadlines on a dead node.
    fn suspect_leader(&self, route: &Route) {
        self.with_cache(|c| c.suspect(route.store_id));
    }

    /// Updates the cache after a retryable server error and says how to retry.
    fn on_error(&self, route: &Route, e: ResponseError) -> Retry {
        let region_id = route.region_id;
        match e {
            ResponseError::NotLeader {
                leader: Some(p), ..
            } if p.store_id != route.store_id => {
                self.with_cache(|c| c.set_leader(region_id, Some(p.store_id)));
                Retry::now(format!(
                    "region {region_id}: leader moved to store {}",
                    p.store_id
                ))
            }
            ResponseError::NotLeader { .. } => {
                self.with_cache(|c| c.set_leader(region_id, None));
                Retry::no_leader(region_id)
            }
            ResponseError::EpochNotMatch { regions } => {
                self.with_cache(|c| {
                    if regions.is_empty() {
                        c.remove(region_id);
                    }
                    for r in &regions {
                        c.insert(r);
                        // The store that answered likely leads the new regions too; a wrong
                        // guess costs one NotLeader with a hint.
                        if c.region(r.region_id)
                            .is_some_and(|x| x.leader_store.is_none())
                        {
                            c.set_leader(r.region_id, Some(route.store_id));
                        }
                    }
                });
                Retry::now(format!("region {region_id}: epoch changed"))
            }
            e @ (ResponseError::RegionNotFound { .. } | ResponseError::KeyNotInRegion { .. }) => {
                self.with_cache(|c| c.remove(region_id));
                Retry::now(e.to_string())
            }
            e @ (ResponseError::Stopping | ResponseError::Unavailable { .. }) => {
                self.with_cache(|c| c.set_leader(region_id, None));
                Retry::later(e.to_string())
            }
            e => Retry::later(e.to_string()),
        }
    }
}

/// The error of a call whose attempts ran out.
fn exhausted(attempts: u32, last: Retry) -> ClientError {
    match last.no_leader {
        Some(region_id) => ClientError::NoLeader { region_id },
        None => ClientError::Unavailable {
            reason: format!("{attempts} attempts failed; last: {}", last.reason),
        },
    }
}

/// The error for an answer of the wrong kind (or a final server error).
pub(crate) fn unexpected(request: &'static str, resp: Response) -> ClientError {
    match resp {
        Response::Error(e) => ClientError::Server(e),
        other => ClientError::Protocol {
            request,
            found: format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_attempts_report_the_last_failure() {
        let e = exhausted(10, Retry::no_leader(4));
        assert!(matches!(e, ClientError::NoLeader { region_id: 4 }));
        let e = exhausted(10, Retry::later("connection lost"));
        assert!(
            matches!(&e, ClientError::Unavailable { reason } if reason.contains("connection lost")),
            "{e:?}"
        );
    }

    #[test]
    fn waiting_for_a_leader_or_a_down_node_is_not_an_attempt() {
        assert!(Retry::later("x").counts);
        assert!(
            Retry::no_leader(1).counts,
            "a node answering NotLeader counts"
        );
        assert!(!Retry::no_leader(1).waiting().counts);
        match Step::<()>::from(AttemptFailure::Skipped("down".into())) {
            Step::Again(r) => assert!(!r.counts),
            _ => panic!("a skipped node is retried"),
        }
    }
}
