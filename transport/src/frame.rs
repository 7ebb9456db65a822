//! Frames: the unit everything travels in on a Basalt QUIC stream. A frame is a 12-byte header
//! (magic, version, kind, body length, crc32) and a body; the byte layout is drawn in
//! `docs/FORMAT.md` ("Transport frames").
//!
//! A reader refuses a frame whose header announces more than its `frame_bytes_max` before
//! reading the body (the sender is then cut off), and a frame whose crc32 does not match.
//! Decoding never panics, whatever the bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// First two bytes of every frame (`0xBA 0x5A` on the wire).
pub const FRAME_MAGIC: u16 = 0x5ABA;
/// The frame format version this build writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 12;
/// Offset of the crc32 in the header; it covers the header bytes before it and the body.
const FRAME_CRC_OFFSET: usize = 8;
/// Default cap on a frame body: 16 MiB holds a 1 MiB snapshot chunk or a large Raft batch with
/// room to spare, yet bounds what a misbehaving peer can make a node buffer.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;

const _: () = assert!(FRAME_CRC_OFFSET + 4 == FRAME_HEADER_LEN);

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A batch of Raft messages (peer uni stream).
    RaftBatch = 1,
    /// Opens a snapshot stream: the `MsgSnapshot` envelope.
    SnapshotHeader = 2,
    /// One snapshot chunk, with its number.
    SnapshotChunk = 3,
    /// A receipt from the receiver of a snapshot.
    SnapshotReceipt = 4,
    /// A client request (client bidi stream).
    ClientRequest = 5,
    /// The answer to a client request.
    ClientResponse = 6,
    /// A client call on a call stream: a call id, then what a `ClientRequest` carries.
    ClientCall = 7,
    /// The answer to a client call: its call id, then what a `ClientResponse` carries.
    ClientReply = 8,
}

impl FrameKind {
    /// The kind with this byte.
    pub fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::RaftBatch,
            2 => FrameKind::SnapshotHeader,
            3 => FrameKind::SnapshotChunk,
            4 => FrameKind::SnapshotReceipt,
            5 => FrameKind::ClientRequest,
            6 => FrameKind::ClientResponse,
            7 => FrameKind::ClientCall,
            8 => FrameKind::ClientReply,
            _ => return None,
        })
    }
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not a Basalt frame.
    #[error("bad frame magic {found:#06x}")]
    BadMagic {
        /// The two bytes found (little-endian).
        found: u16,
    },
    /// A frame version this build does not read.
    #[error("frame version {found} is not supported (this build reads {FRAME_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// An unknown kind byte.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// The body is larger than the reader accepts.
    #[error("frame body of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// The announced body length.
        len: u32,
        /// The reader's cap.
        max: u32,
    },
    /// The crc32 does not match: the frame was damaged.
    #[error("frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The stored value.
        stored: u32,
        /// The value computed.
        computed: u32,
    },
    /// Fewer bytes than the header announced.
    #[error("frame truncated: {needed} more bytes needed")]
    Truncated {
        /// How many more bytes.
        needed: usize,
    },
}

/// A decoded header: what to expect of the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The kind.
    pub kind: FrameKind,
    /// Body bytes that follow.
    pub body_len: u32,
    crc: u32,
    raw: [u8; FRAME_CRC_OFFSET],
}

impl FrameHeader {
    /// Parses a header, refusing a body longer than `frame_bytes_max`. Never panics.
    pub fn parse(h: &[u8; FRAME_HEADER_LEN], frame_bytes_max: u32) -> Result<Self, FrameError> {
        let magic = u16::from_le_bytes([h[0], h[1]]);
        if magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if h[2] != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion { found: h[2] });
        }
        let kind = FrameKind::from_u8(h[3]).ok_or(FrameError::UnknownKind { kind: h[3] })?;
        let body_len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if body_len > frame_bytes_max {
            return Err(FrameError::TooLarge {
                len: body_len,
                max: frame_bytes_max,
            });
        }
        let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        let mut raw = [0u8; FRAME_CRC_OFFSET];
        raw.copy_from_slice(&h[..FRAME_CRC_OFFSET]);
        Ok(FrameHeader {
            kind,
            body_len,
            crc,
            raw,
        })
    }

    /// Checks the body against the header's crc32 and returns the frame.
    pub fn check_body(&self, body: Bytes) -> Result<Frame, FrameError> {
        if body.len() != self.body_len as usize {
            return Err(FrameError::Truncated {
                needed: (self.body_len as usize).saturating_sub(body.len()),
            });
        }
        let computed = frame_crc(&self.raw, &body);
        if computed != self.crc {
            return Err(FrameError::Checksum {
                stored: self.crc,
                computed,
            });
        }
        Ok(Frame {
            kind: self.kind,
            body,
        })
    }
}

fn frame_crc(header: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(body);
    h.finalize()
}

/// A frame: its kind and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The kind.
    pub kind: FrameKind,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A frame of `kind` carrying `body`.
    pub fn new(kind: FrameKind, body: Bytes) -> Frame {
        Frame { kind, body }
    }

    /// Appends the encoded frame (header, then body) to `out`.
    ///
    /// # Panics
    /// If the body is 4 GiB or more (a programmer error: writers check their cap first).
    pub fn encode_into(&self, out: &mut BytesMut) {
        let len = u32::try_from(self.body.len()).expect("frame bodies are capped below 4 GiB");
        let start = out.len();
        out.reserve(FRAME_HEADER_LEN + self.body.len());
        out.put_u16_le(FRAME_MAGIC);
        out.put_u8(FRAME_VERSION);
        out.put_u8(self.kind as u8);
        out.put_u32_le(len);
        let crc = frame_crc(&out[start..start + FRAME_CRC_OFFSET], &self.body);
        out.put_u32_le(crc);
        out.put_slice(&self.body);
    }

    /// The encoded frame.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Decodes one frame from the front of `buf`; returns it and the bytes it took. Never
    /// panics.
    pub fn decode(buf: &Bytes, frame_bytes_max: u32) -> Result<(Frame, usize), FrameError> {
        if buf.len() < FRAME_HEADER_LEN {
            return Err(FrameError::Truncated {
                needed: FRAME_HEADER_LEN - buf.len(),
            });
        }
        let mut h = [0u8; FRAME_HEADER_LEN];
        h.copy_from_slice(&buf[..FRAME_HEADER_LEN]);
        let header = FrameHeader::parse(&h, frame_bytes_max)?;
        let end = FRAME_HEADER_LEN + header.body_len as usize;
        if buf.len() < end {
            return Err(FrameError::Truncated {
                needed: end - buf.len(),
            });
        }
        let frame = header.check_body(buf.slice(FRAME_HEADER_LEN..end))?;
        Ok((frame, end))
    }
}

/// Reads one frame from a QUIC stream. `Ok(None)`: the stream ended cleanly between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    frame_bytes_max: u32,
) -> Result<Option<Frame>, crate::TransportError> {
    let mut h = [0u8; FRAME_HEADER_LEN];
    match recv.read_exact(&mut h).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(FrameError::Truncated {
                needed: FRAME_HEADER_LEN - n,
            }
            .into())
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let header = FrameHeader::parse(&h, frame_bytes_max)?;
    let mut body = vec![0u8; header.body_len as usize];
    match recv.read_exact(&mut body).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(FrameError::Truncated {
                needed: header.body_len as usize - n,
            }
            .into())
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    Ok(Some(header.check_body(Bytes::from(body))?))
}

/// Reads the frames of a long-lived stream: it takes whatever the stream has (one read for
/// many small frames, where [`read_frame`] makes two per frame) and hands the frames out one
/// by one.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    frame_bytes_max: u32,
}

/// Most bytes taken from a stream in one read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

impl FrameReader {
    /// A reader refusing frame bodies longer than `frame_bytes_max`.
    pub fn new(frame_bytes_max: u32) -> FrameReader {
        FrameReader {
            buf: BytesMut::new(),
            frame_bytes_max,
        }
    }

    /// The next frame. `Ok(None)`: the stream ended cleanly between frames.
    pub async fn next(
        &mut self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Option<Frame>, crate::TransportError> {
        loop {
            if let Some(frame) = self.take()? {
                return Ok(Some(frame));
            }
            match recv.read_chunk(READ_CHUNK_BYTES, true).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(FrameError::Truncated {
                        needed: self.missing(),
                    }
                    .into())
                }
            }
        }
    }

    /// A whole frame from the buffer, if one is there; a bad header is an error at once.
    fn take(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut h = [0u8; FRAME_HEADER_LEN];
        h.copy_from_slice(&self.buf[..FRAME_HEADER_LEN]);
        let header = FrameHeader::parse(&h, self.frame_bytes_max)?;
        let end = FRAME_HEADER_LEN + header.body_len as usize;
        if self.buf.len() < end {
            self.buf.reserve(end - self.buf.len());
            return Ok(None);
        }
        let mut whole = self.buf.split_to(end);
        let body = whole.split_off(FRAME_HEADER_LEN).freeze();
        header.check_body(body).map(Some)
    }

    /// Bytes still missing from the partial frame in the buffer (whose header, if complete,
    /// has already been accepted by [`FrameReader::take`]).
    fn missing(&self) -> usize {
        if self.buf.len() < FRAME_HEADER_LEN {
            return FRAME_HEADER_LEN - self.buf.len();
        }
        let body_len = u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        (FRAME_HEADER_LEN + body_len as usize).saturating_sub(self.buf.len())
    }
}

/// Writes one frame to a QUIC stream.
pub async fn write_frame(
    send: &mut quinn::SendStream,
    frame: &Frame,
) -> Result<(), crate::TransportError> {
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + frame.body.len());
    frame.encode_into(&mut out);
    send.write_all(&out).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_bit_is_refused() {
        let f = Frame::new(FrameKind::RaftBatch, Bytes::from_static(b"hello frame"));
        let enc = f.encode();
        assert_eq!(Frame::decode(&enc, 1024).unwrap(), (f, enc.len()));
        for i in 0..enc.len() * 8 {
            let mut v = enc.to_vec();
            v[i / 8] ^= 1 << (i % 8);
            assert!(Frame::decode(&Bytes::from(v), 1024).is_err(), "bit {i}");
        }
    }

    #[test]
    fn header_layout_matches_format_doc() {
        let enc = Frame::new(FrameKind::ClientResponse, Bytes::from_static(b"xy")).encode();
        assert_eq!(&enc[0..2], &[0xBA, 0x5A]);
        assert_eq!(enc[2], FRAME_VERSION);
        assert_eq!(enc[3], 6);
        assert_eq!(&enc[4..8], &2u32.to_le_bytes());
        let crc = u32::from_le_bytes([enc[8], enc[9], enc[10], enc[11]]);
        let mut h = crc32fast::Hasher::new();
        h.update(&enc[0..8]);
        h.update(b"xy");
        assert_eq!(crc, h.finalize());
        assert_eq!(&enc[12..], b"xy");
    }

    #[test]
    fn frame_reader_splits_a_buffer_of_frames_and_waits_for_partial_ones() {
        let a = Frame::new(FrameKind::ClientCall, Bytes::from_static(b"first"));
        let b = Frame::new(FrameKind::ClientReply, Bytes::from(vec![9u8; 300]));
        let mut all = BytesMut::new();
        a.encode_into(&mut all);
        b.encode_into(&mut all);
        let mut r = FrameReader::new(1024);
        let cut = all.len() - 10;
        r.buf.extend_from_slice(&all[..cut]);
        assert_eq!(r.take().unwrap(), Some(a));
        assert_eq!(r.take().unwrap(), None, "the second frame is not whole yet");
        assert_eq!(r.missing(), 10);
        r.buf.extend_from_slice(&all[cut..]);
        assert_eq!(r.take().unwrap(), Some(b));
        assert_eq!(r.take().unwrap(), None);
        r.buf.extend_from_slice(b"\x00\x00bad header!!");
        assert!(matches!(r.take(), Err(FrameError::BadMagic { .. })));
    }

    #[test]
    fn oversize_header_is_refused_before_the_body() {
        let enc = Frame::new(FrameKind::RaftBatch, Bytes::from(vec![7u8; 100])).encode();
        let mut h = [0u8; FRAME_HEADER_LEN];
        h.copy_from_slice(&enc[..FRAME_HEADER_LEN]);
        assert_eq!(
            FrameHeader::parse(&h, 99),
            Err(FrameError::TooLarge { len: 100, max: 99 })
        );
    }
}
