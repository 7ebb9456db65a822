//! LEB128 varints (7 value bits per byte, least significant group first, high bit = "more"),
//! zigzag for signed values, and length-prefixed byte strings — the encoder side. The decoder
//! side lives in the reader.

/// Longest encoding of a `u64`: ten bytes (9 × 7 bits + 1 bit).
pub const UVARINT_LEN_MAX: usize = 10;

/// Bytes `put_uvarint(v)` writes.
#[inline]
pub fn uvarint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `v` as a minimal LEB128 varint.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    let mut buf = [0u8; UVARINT_LEN_MAX];
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    out.extend_from_slice(&buf[..=n]);
}

/// Zigzag-maps a signed value so that small magnitudes encode short: 0, -1, 1, -2 → 0, 1, 2, 3.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes `put_bytes(b)` writes.
#[inline]
pub fn bytes_len(b: &[u8]) -> usize {
    uvarint_len(b.len() as u64) + b.len()
}

/// Appends a length-prefixed byte string.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Bytes `put_u64s(vs)` writes.
pub fn u64s_len(vs: &[u64]) -> usize {
    uvarint_len(vs.len() as u64) + vs.iter().map(|&v| uvarint_len(v)).sum::<usize>()
}

/// Appends a count-prefixed list of varints.
pub fn put_u64s(out: &mut Vec<u8>, vs: &[u64]) {
    put_uvarint(out, vs.len() as u64);
    for &v in vs {
        put_uvarint(out, v);
    }
}

/// A stack buffer for the small fixed fields at the head of a body, appended to the output with
/// one `extend_from_slice` instead of one capacity check per byte. `N` must cover the longest
/// head the caller writes (ten bytes per varint).
pub struct Head<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Head<N> {
    /// An empty head.
    #[inline]
    pub fn new() -> Head<N> {
        Head {
            buf: [0; N],
            len: 0,
        }
    }

    /// One raw byte.
    #[inline]
    pub fn u8(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// A minimal LEB128 varint.
    #[inline]
    pub fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.u8(v as u8);
    }

    /// Appends the bytes written so far to `out`.
    #[inline]
    pub fn flush_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf[..self.len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_encodings_at_every_group_boundary() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                let mut out = Vec::new();
                put_uvarint(&mut out, v);
                assert_eq!(out.len(), uvarint_len(v), "value {v}");
            }
        }
        assert_eq!(uvarint_len(0), 1);
        assert_eq!(uvarint_len(127), 1);
        assert_eq!(uvarint_len(128), 2);
        assert_eq!(uvarint_len(u64::MAX), UVARINT_LEN_MAX);
    }

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_values() {
        assert_eq!([0, -1, 1, -2, 2].map(zigzag), [0, 1, 2, 3, 4]);
        for v in [0, 1, -1, i64::MIN, i64::MAX, 12345, -12345] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
