//! Little-endian field encoding shared by the frame bodies and the client protocol: fixed-width
//! integers, `u32`-length-prefixed byte strings, and a bounds-checked reader that never panics.

use bytes::{BufMut, Bytes, BytesMut};

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended early.
    #[error("truncated at offset {offset}: {needed} more bytes needed")]
    Truncated {
        /// Where.
        offset: usize,
        /// How many more bytes.
        needed: usize,
    },
    /// Bytes left after the structure.
    #[error("{remaining} trailing bytes")]
    TrailingBytes {
        /// How many.
        remaining: usize,
    },
    /// A version this build does not read.
    #[error("unknown {what} version {version}")]
    UnknownVersion {
        /// Which structure.
        what: &'static str,
        /// The version byte.
        version: u8,
    },
    /// A tag with no meaning.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which field.
        what: &'static str,
        /// The tag.
        tag: u8,
    },
    /// A count larger than the input could hold.
    #[error("{what} count {count} exceeds the input")]
    Count {
        /// What is counted.
        what: &'static str,
        /// The count.
        count: u64,
    },
}

pub(crate) fn put_u8(out: &mut BytesMut, v: u8) {
    out.put_u8(v);
}

pub(crate) fn put_u32(out: &mut BytesMut, v: u32) {
    out.put_u32_le(v);
}

pub(crate) fn put_u64(out: &mut BytesMut, v: u64) {
    out.put_u64_le(v);
}

pub(crate) fn put_bool(out: &mut BytesMut, v: bool) {
    out.put_u8(u8::from(v));
}

/// A `u32` length, then the bytes.
pub(crate) fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

/// A presence byte (0 or 1), then the bytes if present.
pub(crate) fn put_opt_bytes(out: &mut BytesMut, b: Option<&Bytes>) {
    match b {
        None => out.put_u8(0),
        Some(b) => {
            out.put_u8(1);
            put_bytes(out, b);
        }
    }
}

/// A bounds-checked reader over a `Bytes`; byte strings come out as zero-copy slices.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { what, tag }),
        }
    }

    pub(crate) fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }

    pub(crate) fn opt_bytes(&mut self, what: &'static str) -> Result<Option<Bytes>, DecodeError> {
        if self.bool(what)? {
            Ok(Some(self.bytes()?))
        } else {
            Ok(None)
        }
    }

    /// A `u32` count of items each at least `item_bytes_min` long, checked against the input so
    /// a forged count cannot make the decoder allocate.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        item_bytes_min: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        if count > self.remaining() / item_bytes_min.max(1) {
            return Err(DecodeError::Count {
                what,
                count: count as u64,
            });
        }
        Ok(count)
    }

    /// The rest of the input.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(DecodeError::TrailingBytes { remaining }),
        }
    }
}
