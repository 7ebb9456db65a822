//! Shared code of the Basalt binaries (`basalt`, `basalt-bench`).
pub mod bench;
pub mod config;
pub mod demo;
pub mod metrics_http;
pub mod node;
pub mod signals;
