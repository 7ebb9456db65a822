//! [`Client`]: the calls an application makes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::Instrument;
use transport::proto::{OpResult, Request, Response, ResponseError, WriteId};
use transport::ClientTlsConfig;

use crate::backoff::Backoff;
use crate::cache::{Lookup, Route};
use crate::error::AttemptFailure;
use crate::lanes::{LaneGuard, LanePool};
use crate::router::{unexpected, Router, Sent};
use crate::{ClientConfig, ClientError};

/// The result of [`Client::compare_and_swap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the key held the expected value (and now holds the new one).
    pub succeeded: bool,
    /// The value found before (`None`: absent).
    pub previous: Option<Bytes>,
}

#[derive(Debug)]
struct Shared {
    router: Arc<Router>,
    lanes: LanePool,
}

/// A connection to a Basalt cluster. Cheap to clone (clones share connections, the region
/// cache and the write lanes); `Send + Sync`, so many tasks may call it at once.
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
    call_timeout: Duration,
}

impl Client {
    /// Connects with the default configuration (see [`ClientConfig::new`]).
    pub async fn connect(
        endpoints: &[SocketAddr],
        tls: ClientTlsConfig,
    ) -> Result<Client, ClientError> {
        Client::connect_with(ClientConfig::new(endpoints.to_vec(), tls)).await
    }

    /// Validates `config`, then asks the endpoints for the cluster's regions until one answers
    /// (within `call_timeout`). Fails with [`ClientError::TlsRefused`] at once when a node
    /// refuses the certificate (and none answers), with [`ClientError::Timeout`] when no node
    /// answered in time.
    pub async fn connect_with(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let call_timeout = config.call_timeout;
        let lanes = LanePool::new(config.write_lanes_max);
        let router = Arc::new(Router::new(config));
        let started = Instant::now();
        let deadline = started + call_timeout;
        let c = &router.config;
        let mut backoff = Backoff::new(c.backoff_initial, c.backoff_max);
        let mut attempts = 0;
        let span = tracing::debug_span!("basalt.connect", endpoints = c.endpoints.len());
        async {
            loop {
                attempts += 1;
                let timeout = c.attempt_timeout.min(deadline - Instant::now());
                let last_error = match router.refresh_now(None, timeout).await {
                    Ok(()) => break Ok(()),
                    Err(AttemptFailure::Final(e)) => break Err(e),
                    Err(AttemptFailure::Retry(why) | AttemptFailure::Skipped(why)) => why,
                };
                let pause = backoff.next_delay();
                if Instant::now() + pause >= deadline {
                    break Err(ClientError::Timeout {
                        elapsed: started.elapsed(),
                        attempts,
                        last_error,
                    });
                }
                tokio::time::sleep(pause).await;
            }
        }
        .instrument(span)
        .await?;
        Ok(Client {
            shared: Arc::new(Shared { router, lanes }),
            call_timeout,
        })
    }

    /// The same client (same connections, cache and lanes) with another deadline per call.
    pub fn with_timeout(&self, call_timeout: Duration) -> Client {
        Client {
            shared: Arc::clone(&self.shared),
            call_timeout,
        }
    }

    /// The deadline of each call of this handle.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    fn router(&self) -> &Arc<Router> {
        &self.shared.router
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.call_timeout
    }

    /// Takes a write lane by `deadline`.
    async fn lane(&self, deadline: Instant) -> Result<LaneGuard<'_>, ClientError> {
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, self.shared.lanes.acquire()).await {
            Ok(Some(lane)) => Ok(lane),
            Ok(None) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout {
                elapsed: started.elapsed(),
                attempts: 0,
                last_error: "every write lane stayed busy".into(),
            }),
        }
    }

    /// The value of `key` (`None`: absent), read from the region's leader (linearizable).
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let key = key.into();
        let span = tracing::debug_span!("basalt.get", key_len = key.len());
        self.router()
            .run(
                &key,
                self.deadline(),
                |r| Request::Get {
                    region_id: r.region_id,
                    epoch: r.epoch,
                    key: key.clone(),
                },
                |_, resp, _| match resp {
                    Response::Value(v) => Ok(v),
                    other => Err(unexpected("get", other)),
                },
            )
            .instrument(span)
            .await
    }

    /// Sets `key` to `value`. Applied at most once, even when retried.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let (key, value) = (key.into(), value.into());
        let span = tracing::debug_span!("basalt.put", key_len = key.len(), value_len = value.len());
        self.write(
            &key,
            |r, id| Request::Put {
                region_id: r.region_id,
                epoch: r.epoch,
                id,
                key: key.clone(),
                value: value.clone(),
            },
            |resp, sent| written("put", resp, sent),
        )
        .instrument(span)
        .await
    }

    /// Removes `key` (absent already is fine). Applied at most once, even when retried.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(), ClientError> {
        let key = key.into();
        let span = tracing::debug_span!("basalt.delete", key_len = key.len());
        self.write(
            &key,
            |r, id| Request::Delete {
                region_id: r.region_id,
                epoch: r.epoch,
                id,
                key: key.clone(),
            },
            |resp, sent| written("delete", resp, sent),
        )
        .instrument(span)
        .await
    }

    /// If `key`'s value is `expected` (`None`: absent), sets it to `new` (`None`: deletes it).
    /// Applied at most once; a retry that finds its first attempt applied with the result no
    /// longer kept fails with [`ClientError::OutcomeUnknown`].
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<CasOutcome, ClientError> {
        let key = key.into();
        let span = tracing::debug_span!("basalt.cas", key_len = key.len());
        self.write(
            &key,
            |r, id| Request::Cas {
                region_id: r.region_id,
                epoch: r.epoch,
                id,
                key: key.clone(),
                expected: expected.clone(),
                new: new.clone(),
            },
            cas_outcome,
        )
        .instrument(span)
        .await
    }

    /// Runs one write of `key` on a lane held for the whole call: every attempt carries the
    /// same write id, so the write applies at most once.
    async fn write<T>(
        &self,
        key: &[u8],
        request: impl Fn(&Route, WriteId) -> Request,
        answer: impl Fn(Response, Sent) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let deadline = self.deadline();
        let lane = self.lane(deadline).await?;
        let id = lane.id();
        self.router()
            .run(
                key,
                deadline,
                |r| request(r, id),
                |_, resp, sent| answer(resp, sent),
            )
            .await
    }

    /// Up to `limit` rows of `[start, end)` in key order (`end` empty: to the end of the key
    /// space), across regions. `limit` 0 or `start > end` is a [`ClientError::BadArgument`].
    /// Each region is read at one point in time, not the whole range.
    pub async fn scan(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, ClientError> {
        let (start, end) = (start.into(), end.into());
        if limit == 0 {
            return Err(ClientError::BadArgument {
                reason: "scan limit must be at least 1".into(),
            });
        }
        if !end.is_empty() && start > end {
            return Err(ClientError::BadArgument {
                reason: "scan start is after its end".into(),
            });
        }
        let span = tracing::debug_span!("basalt.scan", limit);
        self.scan_regions(start, end, limit).instrument(span).await
    }

    async fn scan_regions(
        &self,
        start: Bytes,
        end: Bytes,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, ClientError> {
        let deadline = self.deadline();
        let page_max = self.router().config.scan_rows_per_request_max;
        let mut rows: Vec<(Bytes, Bytes)> = Vec::new();
        let mut cursor = start;
        while rows.len() < limit && (end.is_empty() || cursor < end) {
            let wanted = u32::try_from(limit - rows.len()).map_or(page_max, |n| n.min(page_max));
            let (batch, region_end) = self
                .router()
                .run(
                    &cursor,
                    deadline,
                    |r| Request::Scan {
                        region_id: r.region_id,
                        epoch: r.epoch,
                        start: cursor.clone(),
                        end: clip_end(&end, &r.end),
                        limit: wanted,
                    },
                    |r, resp, _| match resp {
                        Response::Rows(v) => Ok((v, r.end.clone())),
                        other => Err(unexpected("scan", other)),
                    },
                )
                .await?;
            // A full page may have more rows after it in this region; a short one ends it.
            let page_full = batch.len() >= wanted as usize;
            let next = batch
                .last()
                .filter(|_| page_full)
                .map(|(k, _)| successor(k));
            rows.extend(batch);
            match next {
                Some(k) => cursor = k,
                None if region_end.is_empty() => break,
                None => cursor = region_end,
            }
        }
        rows.truncate(limit);
        Ok(rows)
    }

    /// The node address of the leader of `key`'s region, after refreshing the cache from the
    /// nodes (`None`: no leader known). For demos and tests.
    pub async fn leader_of(&self, key: &[u8]) -> Result<Option<SocketAddr>, ClientError> {
        let router = self.router();
        let timeout = router.config.attempt_timeout.min(self.call_timeout);
        match router.refresh_now(Some(key), timeout).await {
            Ok(()) => {}
            Err(AttemptFailure::Final(e)) => return Err(e),
            Err(AttemptFailure::Retry(reason) | AttemptFailure::Skipped(reason)) => {
                return Err(ClientError::Unavailable { reason })
            }
        }
        Ok(match router.lookup(key) {
            Lookup::Route(r) => Some(r.addr),
            Lookup::NoLeader { .. } | Lookup::Unknown => None,
        })
    }

    /// Closes the client (every clone): connections close, calls in progress and later fail
    /// with [`ClientError::Closed`] (a write in progress may still be applied).
    pub async fn close(&self) {
        let router = self.router();
        router.closed.store(true, Ordering::Release);
        self.shared.lanes.close();
        router.conns.close_all();
    }
}

/// The smallest key after `key`.
fn successor(key: &Bytes) -> Bytes {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    Bytes::from(k)
}

/// The end of a region's part of a scan of `[.., end)`: the nearer of `end` and the region's.
fn clip_end(end: &Bytes, region_end: &Bytes) -> Bytes {
    if region_end.is_empty() || (!end.is_empty() && end < region_end) {
        end.clone()
    } else {
        region_end.clone()
    }
}

/// The result of a put or delete: a retry refused as already applied was applied earlier.
fn written(request: &'static str, resp: Response, sent: Sent) -> Result<(), ClientError> {
    match resp {
        Response::Written(_) => Ok(()),
        Response::Error(ResponseError::AlreadyApplied { .. }) if sent.before => Ok(()),
        other => Err(unexpected(request, other)),
    }
}

/// The result of a compare-and-swap.
fn cas_outcome(resp: Response, sent: Sent) -> Result<CasOutcome, ClientError> {
    match resp {
        Response::Written(results) => match results.first() {
            Some(OpResult::Cas {
                succeeded,
                previous,
            }) => Ok(CasOutcome {
                succeeded: *succeeded,
                previous: previous.clone(),
            }),
            _ => Err(ClientError::Protocol {
                request: "cas",
                found: format!("{results:?}"),
            }),
        },
        Response::Error(e @ ResponseError::AlreadyApplied { .. }) if sent.before => {
            Err(ClientError::OutcomeUnknown {
                reason: e.to_string(),
            })
        }
        other => Err(unexpected("cas", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied() -> Response {
        Response::Error(ResponseError::AlreadyApplied {
            client_id: 7,
            sequence: 3,
            last: 3,
        })
    }

    #[test]
    fn already_applied_on_a_retry_is_success_for_puts_and_unknown_for_cas() {
        let retry = Sent { before: true };
        let first = Sent { before: false };
        assert!(written("put", applied(), retry).is_ok());
        assert!(matches!(
            written("put", applied(), first),
            Err(ClientError::Server(ResponseError::AlreadyApplied { .. }))
        ));
        assert!(matches!(
            cas_outcome(applied(), retry),
            Err(ClientError::OutcomeUnknown { .. })
        ));
        let ok = Response::Written(vec![OpResult::Cas {
            succeeded: false,
            previous: Some(Bytes::from("v")),
        }]);
        assert_eq!(
            cas_outcome(ok, first).ok(),
            Some(CasOutcome {
                succeeded: false,
                previous: Some(Bytes::from("v"))
            })
        );
    }

    #[test]
    fn scan_ends_are_clipped_to_the_region() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        assert_eq!(clip_end(&b(""), &b("m")), b("m"));
        assert_eq!(clip_end(&b("z"), &b("m")), b("m"));
        assert_eq!(clip_end(&b("c"), &b("m")), b("c"));
        assert_eq!(clip_end(&b("c"), &b("")), b("c"));
        assert_eq!(clip_end(&b(""), &b("")), b(""));
        assert_eq!(successor(&b("ab")).as_ref(), b"ab\0");
        assert!(successor(&b("ab")) > b("ab") && successor(&b("ab")) < b("ab\0\0"));
    }
}
