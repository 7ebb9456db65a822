//! transport: the QUIC transport of Basalt (quinn + rustls, mutual TLS always).
//!
//! Between stores it carries batched Raft messages on one long-lived stream per connection and
//! snapshots on streams of their own, with back-pressure and resume by chunk; to clients it
//! serves the client protocol on one long-lived call stream per client connection (calls told
//! apart by call id, see [`client`]), or on a stream per request. Every byte travels in a
//! [`frame`]: versioned, length-capped and checksummed. Every node and client presents a
//! certificate signed by the cluster CA ([`certs`], [`tls`]); anything else is refused during
//! the handshake, before a frame is read.
//!
//! Each node dials the nodes it sends to, so a pair of nodes shares two connections, one per
//! direction, each with one long-lived Raft stream; the stores of a node share its connections.
//! Local delivery (a store sending to another store of the same node) skips the network for
//! Raft messages; snapshots always go through the endpoint, so every store needs an address.
//!
//! The client side ([`proto`], [`frame`], [`tls`], [`certs`], [`client`]) never depends on the
//! engine: build with `default-features = false` and an application linking the SDK pulls in
//! neither io_uring nor the storage code. The node side (peer transport, snapshot streams,
//! client-protocol server) is behind the default `server` feature.
#![warn(missing_docs)]

pub mod certs;
pub mod client;
pub mod error;
pub mod frame;
pub mod proto;
pub mod tls;
mod wire;

#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
mod peer;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod snapshot;

pub use client::ClientConnection;
pub use error::TransportError;
pub use tls::{ClientTlsConfig, TlsConfig};
pub use wire::DecodeError;

#[cfg(feature = "server")]
pub use node::{NodeTransport, QuicTransport, TransportConfig};
#[cfg(feature = "server")]
pub use server::ClientService;

/// The ALPN protocol id every Basalt QUIC connection negotiates.
pub const ALPN: &[u8] = b"basalt/1";

/// QUIC close code: normal close.
pub const CLOSE_NORMAL: quinn::VarInt = quinn::VarInt::from_u32(0);
/// QUIC close code: the peer broke the protocol (oversize or corrupt frame, wrong kind).
pub const CLOSE_PROTOCOL_ERROR: quinn::VarInt = quinn::VarInt::from_u32(1);
/// QUIC close code: the node is shutting down.
pub const CLOSE_SHUTDOWN: quinn::VarInt = quinn::VarInt::from_u32(2);
