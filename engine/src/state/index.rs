//! The in-memory index: per region an [`imbl::OrdMap`] from [`Key`] to [`ValueLoc`].
//!
//! The map is persistent (structurally shared), so a clone is O(1): a checkpoint or a frozen
//! region takes one and the live map copies only the nodes it changes afterwards. [`Key`] keeps
//! keys of up to [`Key::INLINE_MAX`] bytes inline (no allocation, nothing to free, clones are
//! copies) and longer ones in a shared allocation (clones are a reference-count increment), in
//! 24 bytes either way; with the 12-byte [`ValueLoc`] an entry takes 40 bytes in a map node.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::sync::Arc;

use super::ValueLoc;

/// A key of the index. Ordered, compared and hashed as its bytes.
#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; Key::INLINE_MAX],
    },
    Shared(Arc<[u8]>),
}

impl Key {
    /// Longest key stored inline.
    pub const INLINE_MAX: usize = 22;

    /// A key holding a copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Key {
        if bytes.len() <= Key::INLINE_MAX {
            let mut b = [0u8; Key::INLINE_MAX];
            b[..bytes.len()].copy_from_slice(bytes);
            Key(Repr::Inline {
                len: bytes.len() as u8,
                bytes: b,
            })
        } else {
            Key(Repr::Shared(Arc::from(bytes)))
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Shared(a) => a,
        }
    }

    /// Heap bytes this key owns beyond its own 24 bytes (shared keys: data + two counters).
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => 0,
            Repr::Shared(a) => (a.len() + 16).div_ceil(8) * 8,
        }
    }
}

const _: () = assert!(std::mem::size_of::<Key>() == 24);

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Key({:?})",
            bytes::Bytes::copy_from_slice(self.as_bytes())
        )
    }
}

/// One region's index.
pub type RegionIndex = imbl::OrdMap<Key, ValueLoc>;

/// Bytes per entry in a map node (key + location, aligned).
pub const ENTRY_BYTES: usize = std::mem::size_of::<(Key, ValueLoc)>();

/// Estimated memory of an index of `len` entries whose keys own `heap_bytes` on the heap:
/// 1.6 times the entry size for the nodes (B-tree nodes of 16 entries about two-thirds full,
/// node headers and inner nodes; measured by `tests/state_index_memory.rs`).
pub fn estimate_bytes(len: usize, heap_bytes: usize) -> u64 {
    (len * ENTRY_BYTES * 8 / 5 + heap_bytes) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_as_bytes_inline_or_not() {
        let long = vec![b'z'; 40];
        let mut ks = [
            Key::new(b"b"),
            Key::new(&long),
            Key::new(b""),
            Key::new(b"a\0"),
            Key::new(b"a"),
        ];
        ks.sort();
        let got: Vec<&[u8]> = ks.iter().map(Key::as_bytes).collect();
        assert_eq!(got, vec![&b""[..], b"a", b"a\0", b"b", &long[..]]);
        assert_eq!(Key::new(&long).heap_bytes(), 56);
        let mut m = RegionIndex::new();
        m.insert(
            Key::new(b"x"),
            ValueLoc {
                segment: 1,
                offset: 2,
                len: 3,
            },
        );
        assert!(m.get(&b"x"[..]).is_some());
    }
}
