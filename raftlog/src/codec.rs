//! The compact, versioned binary codec of raftlog's types. The byte layout is drawn in
//! `docs/FORMAT.md` ("raftlog codec"); this module does not repeat it.
//!
//! Every type has the same five methods (inherent, and through the [`Codec`] trait for generic
//! code): [`encode_into`](Codec::encode_into) appends to a caller's buffer with one `reserve` and
//! no other allocation, [`encode_to_vec`](Codec::encode_to_vec), [`encoded_len`](Codec::encoded_len),
//! [`decode`](Codec::decode) (copies payloads out of a borrowed slice) and
//! [`decode_bytes`](Codec::decode_bytes) (payloads become zero-copy slices of the input `Bytes`).
//!
//! Decoding never panics and never trusts a length prefix: a count or length is checked against
//! the bytes left before anything is allocated, so memory is bounded by a small multiple of the
//! input size. The encoding is canonical (minimal varints, strict booleans and flags, no trailing
//! bytes), so a byte string decodes only if re-encoding the value gives back exactly those bytes.
//! The codec carries no checksum: the engine's log blocks and the transport's frames do.

mod conf_change;
mod log;
mod message;
mod reader;
mod varint;

#[cfg(test)]
mod golden;

use bytes::Bytes;
use thiserror::Error;

use crate::types::{
    ConfChange, ConfChangeSingle, ConfChangeV2, ConfState, Entry, HardState, Message, Snapshot,
    SnapshotMetadata,
};
use reader::Reader;

/// The format version written as the first byte of every top-level encoding.
pub const FORMAT_VERSION: u8 = 1;

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
    /// The leading format-version byte is not one this build reads.
    #[error("unknown format version {version}")]
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },
    /// A one-byte enum tag, boolean or flag set has a value with no meaning.
    #[error("unknown {what} tag {tag} at offset {offset}")]
    UnknownTag {
        /// Which field held the tag.
        what: &'static str,
        /// The tag found.
        tag: u8,
        /// Offset of the tag byte.
        offset: usize,
    },
    /// A varint is longer than ten bytes or its value exceeds `u64::MAX`.
    #[error("varint overflows u64 at offset {offset}")]
    VarintOverflow {
        /// Offset where the varint starts.
        offset: usize,
    },
    /// A varint is not in its shortest form (it ends with a zero continuation byte).
    #[error("non-canonical (overlong) varint at offset {offset}")]
    NonCanonicalVarint {
        /// Offset where the varint starts.
        offset: usize,
    },
    /// A length or element count claims more than the remaining input can hold.
    #[error("{what} length {len} at offset {offset} exceeds the {remaining} bytes left")]
    LengthOverflow {
        /// Which field the prefix belongs to.
        what: &'static str,
        /// The length or count found.
        len: u64,
        /// Offset of the prefix.
        offset: usize,
        /// Bytes left after the prefix.
        remaining: usize,
    },
    /// The value ended before the input did.
    #[error("{remaining} trailing bytes after the value at offset {offset}")]
    TrailingBytes {
        /// Where the value ended.
        offset: usize,
        /// How many bytes follow it.
        remaining: usize,
    },
}

mod sealed {
    use super::{DecodeError, Reader};

    /// The versionless body of a type: what nested values (an entry inside a message) use.
    pub trait Body: Sized {
        /// Bytes [`Body::encode_body`] appends.
        fn body_len(&self) -> usize;
        /// Appends the body; `out` has been reserved by the caller.
        fn encode_body(&self, out: &mut Vec<u8>);
        /// Reads one body.
        fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    }
}
use sealed::Body;

/// The codec's operations, for generic code. Each type also has them as inherent methods, so
/// callers need not import this trait. Sealed: implemented only for raftlog's types.
pub trait Codec: Body {
    /// Exact length of [`Codec::encode_to_vec`]'s output, version byte included.
    fn encoded_len(&self) -> usize {
        1 + self.body_len()
    }

    /// Appends the encoding to `out` (one `reserve`, no other allocation).
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(Codec::encoded_len(self));
        out.push(FORMAT_VERSION);
        self.encode_body(out);
    }

    /// The encoding in a new vector of exactly [`Codec::encoded_len`] bytes.
    fn encode_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Codec::encoded_len(self));
        Codec::encode_into(self, &mut out);
        out
    }

    /// Decodes a whole byte string (payloads are copied out of it).
    fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(Reader::new(input))
    }

    /// Decodes a whole `Bytes` buffer; payloads are zero-copy slices of it.
    fn decode_bytes(input: &Bytes) -> Result<Self, DecodeError> {
        decode_versioned(Reader::with_source(input))
    }
}

fn decode_versioned<T: Body>(mut r: Reader<'_>) -> Result<T, DecodeError> {
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion { version });
    }
    let value = T::decode_body(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// Implements [`Codec`] and the inherent codec methods for each listed type.
macro_rules! codec_methods {
    ($($ty:ty),* $(,)?) => {$(
        impl Codec for $ty {}

        impl $ty {
            /// Exact length of the encoding (see [`Codec::encoded_len`]).
            #[inline]
            pub fn encoded_len(&self) -> usize {
                Codec::encoded_len(self)
            }

            /// Appends the encoding to `out` (see [`Codec::encode_into`]).
            #[inline]
            pub fn encode_into(&self, out: &mut Vec<u8>) {
                Codec::encode_into(self, out)
            }

            /// The encoding as a new vector (see [`Codec::encode_to_vec`]).
            #[inline]
            pub fn encode_to_vec(&self) -> Vec<u8> {
                Codec::encode_to_vec(self)
            }

            /// Decodes a whole byte string (see [`Codec::decode`]).
            #[inline]
            pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
                <Self as Codec>::decode(input)
            }

            /// Decodes a whole `Bytes`, zero-copy (see [`Codec::decode_bytes`]).
            #[inline]
            pub fn decode_bytes(input: &Bytes) -> Result<Self, DecodeError> {
                <Self as Codec>::decode_bytes(input)
            }
        }
    )*};
}

codec_methods!(
    Entry,
    HardState,
    ConfState,
    SnapshotMetadata,
    Snapshot,
    Message,
    ConfChange,
    ConfChangeSingle,
    ConfChangeV2,
);
