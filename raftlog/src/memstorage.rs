//! MemStorage: placeholder until the codec/MemStorage work lands.

/// In-memory storage (placeholder).
#[derive(Clone, Default)]
pub struct MemStorage;
