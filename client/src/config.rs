//! The client's configuration, validated once at connect.

use std::net::SocketAddr;
use std::time::Duration;

use transport::ClientTlsConfig;

use crate::ClientError;

/// How a [`Client`](crate::Client) connects, retries and times out.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Addresses of nodes to discover the cluster from (each node's client port). At least one;
    /// listing every node lets the client reach stores it has not heard of yet.
    pub endpoints: Vec<SocketAddr>,
    /// The client's certificate, key and the cluster CA.
    pub tls: ClientTlsConfig,
    /// Deadline of one SDK call, retries included. Default 5 s: several elections (about 1 s
    /// each at the default 100 ms tick) fit in it, yet a caller is not held much past what a
    /// person waits for.
    pub call_timeout: Duration,
    /// Deadline of one attempt (one connect, or one request and its answer). Default 2 s: a
    /// healthy node answers in milliseconds, so this only bounds the wait on a dead or
    /// partitioned node before trying another; it leaves room for two more attempts in
    /// `call_timeout`.
    pub attempt_timeout: Duration,
    /// Most attempts of one call: requests sent and connections tried. Waiting for a region
    /// to elect a leader (the nodes answered, none leads) is not an attempt; the deadline
    /// bounds it. Default 10: a leader hint and an epoch refresh cost one attempt each, so a
    /// call survives a split and a leader change together with room to spare.
    pub max_attempts: u32,
    /// First backoff between attempts. Default 10 ms: about one Raft heartbeat on a fast
    /// cluster, so a retry after a dropped proposal is quick.
    pub backoff_initial: Duration,
    /// Largest backoff. Default 500 ms: about half an election timeout, so a client polling
    /// for a new leader does not sleep through it.
    pub backoff_max: Duration,
    /// Most writes of this client in flight at once (each needs a session lane of its own;
    /// more wait). Default 256: well above the 64 in flight of the benchmarks, and a quarter
    /// of the sessions a region keeps (1024), which several clients share.
    pub write_lanes_max: usize,
    /// Most rows asked of a node in one scan request; a longer scan pages. Default 1024: one
    /// answer of 1024 rows stays under the 16 MiB frame cap for values up to about 16 KiB,
    /// and is large enough that paging costs little.
    pub scan_rows_per_request_max: u32,
}

impl ClientConfig {
    /// A configuration with the defaults.
    pub fn new(endpoints: Vec<SocketAddr>, tls: ClientTlsConfig) -> ClientConfig {
        ClientConfig {
            endpoints,
            tls,
            call_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            max_attempts: 10,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            write_lanes_max: 256,
            scan_rows_per_request_max: 1024,
        }
    }

    /// Refuses a configuration that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |key: &str, why: &str| {
            Err(ClientError::BadArgument {
                reason: format!("config {key}: {why}"),
            })
        };
        if self.endpoints.is_empty() {
            return bad("endpoints", "at least one node address is needed");
        }
        if self.call_timeout.is_zero() {
            return bad("call_timeout", "must be positive");
        }
        if self.attempt_timeout.is_zero() {
            return bad("attempt_timeout", "must be positive");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.backoff_initial.is_zero() {
            return bad("backoff_initial", "must be positive");
        }
        if self.backoff_max < self.backoff_initial {
            return bad("backoff_max", "must be at least backoff_initial");
        }
        if self.write_lanes_max == 0 {
            return bad("write_lanes_max", "must be at least 1");
        }
        if self.scan_rows_per_request_max == 0 {
            return bad("scan_rows_per_request_max", "must be at least 1");
        }
        Ok(())
    }
}
