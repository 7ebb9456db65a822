//! The thin Basalt client SDK (async, on tokio).
//!
//! A [`Client`] reads and writes keys of a Basalt cluster: [`get`](Client::get),
//! [`put`](Client::put), [`delete`](Client::delete), [`scan`](Client::scan) across regions in key
//! order, and [`compare_and_swap`](Client::compare_and_swap). It keeps a cache of the regions
//! (key range, epoch, peers, leader) and of the node address of each store, learned from the
//! nodes' `Status` answers; sends each request to the leader of the key's region over one QUIC
//! connection per node (mutual TLS, the cluster CA); follows `NotLeader` and `EpochNotMatch`
//! hints; retries only retryable failures, with exponential backoff and jitter, within a
//! deadline per call ([`ClientConfig::call_timeout`]) and a bound on attempts.
//!
//! Writes are applied at most once: each carries a write id (a session id and a sequence) that
//! its retries reuse, and the region refuses an id it applied before. A region remembers one
//! sequence per session id, so a client keeps a pool of sessions ("lanes"), one per write in
//! flight. A write whose call fails with a timeout may or may not have been applied.
//!
//! What it never does: link the engine. It uses only the client side of the `transport` crate
//! (built with `default-features = false`), so an application depending on it pulls in neither
//! io_uring nor the storage code (`cargo tree -p client` shows neither).
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use client::{Client, ClientTlsConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // `basalt certs` wrote ca.pem, app.pem and app.key into ./certs.
//! let tls = ClientTlsConfig::from_dir(Path::new("certs"), "app")?;
//! let nodes = ["127.0.0.1:7001".parse()?, "127.0.0.1:7002".parse()?];
//! let client = Client::connect(&nodes, tls).await?;
//! client.put("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! let swapped = client
//!     .compare_and_swap("greeting", Some("hello".into()), Some("hi".into()))
//!     .await?;
//! assert!(swapped.succeeded);
//! for (key, value) in client.scan("a", "z", 100).await? {
//!     println!("{key:?} = {value:?}");
//! }
//! // A handle with a shorter deadline shares the connections.
//! let quick = client.with_timeout(Duration::from_millis(200));
//! quick.delete("greeting").await?;
//! client.close().await;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod api;
mod backoff;
mod cache;
mod config;
mod connections;
mod discovery;
mod error;
mod lanes;
mod router;

pub use api::{CasOutcome, Client};
pub use config::ClientConfig;
pub use error::ClientError;
pub use transport::proto::ResponseError;
pub use transport::ClientTlsConfig;
