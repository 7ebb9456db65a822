//! Membership changes: validating a change against the current configuration and computing the
//! next one ([`Changer`]), and rebuilding a configuration from a [`crate::ConfState`]
//! ([`restore()`]).

mod changer;
mod restore;
#[cfg(test)]
mod tests;

pub use changer::Changer;
pub use restore::restore;

/// Whether a peer's progress is created or dropped by a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapChangeType {
    /// The peer joins: create its progress.
    Add,
    /// The peer leaves: drop its progress.
    Remove,
}

/// The progress changes a conf change implies, in the order they happen.
pub type MapChange = Vec<(u64, MapChangeType)>;
