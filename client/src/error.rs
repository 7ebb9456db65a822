//! The SDK's one error type, and the classification of transport failures into retryable and
//! final ones.

use std::net::SocketAddr;
use std::time::Duration;

use transport::proto::ResponseError;
use transport::TransportError;

/// Why an SDK call failed.
///
/// A write that fails with [`ClientError::Timeout`], [`ClientError::NoLeader`],
/// [`ClientError::Unavailable`] or [`ClientError::OutcomeUnknown`] may or may not have been
/// applied (at most once); every other error means it was not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The call's deadline passed before it succeeded.
    #[error("timed out after {elapsed:?} ({attempts} attempts; last: {last_error})")]
    Timeout {
        /// Time spent in the call.
        elapsed: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last failure seen, for diagnosis.
        last_error: String,
    },
    /// Every attempt found the key's region without a leader.
    #[error("region {region_id} has no leader")]
    NoLeader {
        /// The region.
        region_id: u64,
    },
    /// No node could serve the call (the attempts ran out, or no endpoint answered).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why, for diagnosis.
        reason: String,
    },
    /// The node refused this client's certificate, or its certificate was not trusted: a
    /// configuration error, never retried.
    #[error("TLS refused by {endpoint}: {reason}")]
    TlsRefused {
        /// The node.
        endpoint: SocketAddr,
        /// The handshake's failure.
        reason: String,
    },
    /// An argument or a configuration value is invalid.
    #[error("bad argument: {reason}")]
    BadArgument {
        /// What is wrong (names the argument or config key).
        reason: String,
    },
    /// A server error that retrying cannot fix.
    #[error("server: {0}")]
    Server(ResponseError),
    /// A retried compare-and-swap found its write id already applied, with the result no longer
    /// kept: it was applied once, but whether the comparison held is not known.
    #[error("outcome unknown: {reason}")]
    OutcomeUnknown {
        /// Why.
        reason: String,
    },
    /// The node answered with a response of the wrong kind.
    #[error("protocol: unexpected {found} in answer to {request}")]
    Protocol {
        /// The request.
        request: &'static str,
        /// What came back.
        found: String,
    },
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

/// How one failed attempt is handled.
#[derive(Debug)]
pub(crate) enum AttemptFailure {
    /// Try again (after a backoff), maybe elsewhere.
    Retry(String),
    /// Nothing was tried: the node failed to connect a moment ago. Try again (after a
    /// backoff) without counting an attempt.
    Skipped(String),
    /// Give up with this error.
    Final(ClientError),
}

/// Whether a QUIC error code is a TLS alert (RFC 9001 §4.8: `0x100 + alert`).
fn is_crypto_code(code: u64) -> bool {
    (0x100..0x200).contains(&code)
}

/// Whether the connection failed because of the TLS handshake (either side refused the
/// other's certificate), and why.
fn tls_refusal(e: &quinn::ConnectionError) -> Option<String> {
    match e {
        quinn::ConnectionError::TransportError(t) if is_crypto_code(u64::from(t.code)) => {
            Some(t.to_string())
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_crypto_code(u64::from(c.error_code)) => {
            Some(c.to_string())
        }
        _ => None,
    }
}

/// The connection-level error inside a transport error, if any.
fn connection_error(e: &TransportError) -> Option<&quinn::ConnectionError> {
    match e {
        TransportError::Connection(c) => Some(c),
        TransportError::Write(quinn::WriteError::ConnectionLost(c)) => Some(c),
        TransportError::Read(quinn::ReadError::ConnectionLost(c)) => Some(c),
        _ => None,
    }
}

/// Whether the whole connection is gone (not just one request's stream), so that the next
/// request must reconnect.
pub(crate) fn connection_lost(e: &TransportError) -> bool {
    connection_error(e).is_some()
}

/// Classifies a failed connect or call to `endpoint`.
pub(crate) fn classify_transport(endpoint: SocketAddr, e: &TransportError) -> AttemptFailure {
    if let Some(reason) = connection_error(e).and_then(tls_refusal) {
        return AttemptFailure::Final(ClientError::TlsRefused { endpoint, reason });
    }
    match e {
        // Local configuration: retrying cannot help.
        TransportError::Tls(_)
        | TransportError::QuicTls(_)
        | TransportError::Pem { .. }
        | TransportError::Config { .. } => AttemptFailure::Final(ClientError::BadArgument {
            reason: format!("TLS configuration: {e}"),
        }),
        _ => AttemptFailure::Retry(format!("{endpoint}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_alerts_are_final_and_other_failures_retry() {
        let ep: SocketAddr = ([127, 0, 0, 1], 1).into();
        let alert = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(48), // unknown_ca
            frame_type: None,
            reason: bytes::Bytes::from_static(b"invalid peer certificate"),
        });
        assert!(matches!(
            classify_transport(ep, &TransportError::Connection(alert)),
            AttemptFailure::Final(ClientError::TlsRefused { .. })
        ));
        let lost = TransportError::Connection(quinn::ConnectionError::TimedOut);
        assert!(matches!(
            classify_transport(ep, &lost),
            AttemptFailure::Retry(_)
        ));
        let t = TransportError::Timeout(Duration::from_secs(1));
        assert!(matches!(
            classify_transport(ep, &t),
            AttemptFailure::Retry(_)
        ));
    }
}
