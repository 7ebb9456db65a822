//! The transport's one error type.

use std::path::PathBuf;

use crate::frame::FrameError;
use crate::wire::DecodeError;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Reading or writing a file (certificates, keys).
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{what}: {reason}")]
    Pem {
        /// Which file or object.
        what: String,
        /// Why.
        reason: String,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// Building a TLS configuration failed.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// Building the client-certificate verifier failed.
    #[error("tls client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The TLS configuration cannot be used for QUIC.
    #[error("tls configuration unusable for QUIC: {0}")]
    QuicTls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A configuration value is invalid.
    #[error("config {key}: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Binding the socket or starting the runtime failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A connection could not be started.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed (including a refused handshake).
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed.
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// Finishing a stream failed (it was already closed).
    #[error("stream closed")]
    ClosedStream(#[from] quinn::ClosedStream),
    /// A frame was refused (oversize, corrupt, unknown).
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame body did not decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A Raft message envelope did not decode.
    #[cfg(feature = "server")]
    #[error("raft message: {0}")]
    RaftMessage(#[from] engine::store::WireError),
    /// No address is known for the store.
    #[error("no address known for store {store_id}")]
    UnknownStore {
        /// The store.
        store_id: u64,
    },
    /// A snapshot chunk could not be produced or sent.
    #[error("snapshot chunk {chunk_no}: {reason}")]
    SnapshotChunk {
        /// The chunk.
        chunk_no: u32,
        /// Why.
        reason: String,
    },
    /// The peer sent a frame of the wrong kind for the stream.
    #[error("unexpected {found:?} frame, wanted {wanted}")]
    UnexpectedFrame {
        /// The kind received.
        found: crate::frame::FrameKind,
        /// What the stream expected.
        wanted: &'static str,
    },
    /// The stream ended before the answer.
    #[error("stream ended before {wanted}")]
    StreamEnded {
        /// What was awaited.
        wanted: &'static str,
    },
    /// A client certificate tried to send peer traffic (Raft messages, snapshots).
    #[error("peer traffic from a certificate that is not a node's")]
    NotANode,
    /// The deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The transport is shut down.
    #[error("transport shut down")]
    Shutdown,
}
