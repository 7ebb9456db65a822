//! MemStorage: filled in by the codec/MemStorage work.
