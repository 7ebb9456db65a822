//! The compact, versioned binary codec of raftlog's types. Layout: `docs/FORMAT.md`.

use thiserror::Error;

/// Why a byte string did not decode.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("truncated input: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where decoding stopped.
        offset: usize,
        /// How many more bytes were needed.
        needed: usize,
    },
}
