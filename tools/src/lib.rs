//! Shared code of the Basalt binaries (`basalt`, `basalt-bench`).
pub mod bench;
