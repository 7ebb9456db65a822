//! The deterministic cluster simulator used by `tests/simulation.rs`.
#![allow(dead_code)]

pub mod checker;
pub mod cluster;
pub mod prng;
