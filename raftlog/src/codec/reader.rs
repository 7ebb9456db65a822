//! The bounds-checked decoding cursor. Every read checks the bytes left first; nothing here can
//! panic or allocate more than the input could justify.

use bytes::Bytes;

use super::varint::{unzigzag, UVARINT_LEN_MAX};
use super::DecodeError;

/// A cursor over the input. When the input is a `Bytes` (`src`), byte-string fields are returned
/// as zero-copy slices of it; otherwise they are copied.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    src: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    /// A reader that copies byte strings out of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            src: None,
        }
    }

    /// A reader that slices byte strings out of `src` without copying.
    pub fn with_source(src: &'a Bytes) -> Reader<'a> {
        Reader {
            buf: src.as_ref(),
            pos: 0,
            src: Some(src),
        }
    }

    /// Bytes not yet read.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails with `TrailingBytes` unless the whole input was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(DecodeError::TrailingBytes {
                offset: self.pos,
                remaining,
            }),
        }
    }

    /// One raw byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
            offset: self.pos,
            needed: 1,
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// One byte, mapped through `f`; `None` from `f` is an `UnknownTag` error naming `what`.
    #[inline]
    pub fn tag<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(u8) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let offset = self.pos;
        let tag = self.u8()?;
        f(tag).ok_or(DecodeError::UnknownTag { what, tag, offset })
    }

    /// A strict boolean: 0 or 1.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        self.tag(what, |t| match t {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        })
    }

    /// A minimal LEB128 varint of at most ten bytes whose value fits a `u64`.
    #[inline]
    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => self.uvarint_multi(),
        }
    }

    /// [`Reader::uvarint`] past the one-byte fast path.
    fn uvarint_multi(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..UVARINT_LEN_MAX {
            let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
                offset: self.pos,
                needed: 1,
            })?;
            self.pos += 1;
            if i == UVARINT_LEN_MAX - 1 && b > 1 {
                // The tenth byte may carry only the 64th bit, and no continuation.
                return Err(DecodeError::VarintOverflow { offset: start });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError::NonCanonicalVarint { offset: start });
                }
                return Ok(value);
            }
        }
        unreachable!("the tenth byte either ends the varint or is rejected above")
    }

    /// A zigzag-encoded signed varint.
    pub fn ivarint(&mut self) -> Result<i64, DecodeError> {
        self.uvarint().map(unzigzag)
    }

    /// A count or length prefix, checked so that `len` elements of at least `elem_size_min`
    /// bytes each fit in what is left of the input.
    pub fn len_prefix(
        &mut self,
        what: &'static str,
        elem_size_min: usize,
    ) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let len = self.uvarint()?;
        let remaining = self.remaining();
        let fits = usize::try_from(len)
            .ok()
            .and_then(|n| n.checked_mul(elem_size_min))
            .is_some_and(|bytes| bytes <= remaining);
        if !fits {
            return Err(DecodeError::LengthOverflow {
                what,
                len,
                offset,
                remaining,
            });
        }
        // `len * elem_size_min <= remaining <= usize::MAX` and elem_size_min >= 1: no truncation.
        Ok(len as usize)
    }

    /// A length-prefixed byte string, sliced from the source `Bytes` when there is one.
    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.len_prefix(what, 1)?;
        let (start, end) = (self.pos, self.pos + len);
        self.pos = end;
        Ok(match self.src {
            Some(src) => src.slice(start..end),
            None => Bytes::copy_from_slice(&self.buf[start..end]),
        })
    }

    /// A count-prefixed list of varints.
    pub fn u64s(&mut self, what: &'static str) -> Result<Vec<u64>, DecodeError> {
        let count = self.len_prefix(what, 1)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.uvarint()?);
        }
        Ok(out)
    }
}
