//! A bounds-checked little-endian cursor for the store layer's small codecs (region metadata,
//! Raft message envelopes, entry envelopes). Every read checks the bytes left first; decoding
//! never panics and never allocates more than the input could justify.

use bytes::{Bytes, BytesMut};

use super::WireError;

/// Reads fixed-width little-endian fields and length-prefixed byte strings from a `Bytes`.
pub(crate) struct Cursor<'a> {
    src: &'a Bytes,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(src: &'a Bytes) -> Cursor<'a> {
        Cursor { src, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.src.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.src[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A byte string with a u32 length prefix, sliced without copying.
    pub(crate) fn bytes(&mut self) -> Result<Bytes, WireError> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(self.src.slice(start..start + len))
    }

    /// The rest of the input, sliced without copying.
    pub(crate) fn rest(&mut self) -> Bytes {
        let b = self.src.slice(self.pos..);
        self.pos = self.src.len();
        b
    }

    pub(crate) fn finish(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes { remaining: n }),
        }
    }
}

pub(crate) fn put_u32(out: &mut BytesMut, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut BytesMut, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}
