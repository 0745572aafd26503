//! The record frame: how a record is kept in a store and handed to a driver.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (1)
//! 1       4     body length, little endian
//! 5       n     body: postcard(RecordMeta) followed by the payload bytes
//! 5+n     4     CRC-32C (Castagnoli) of bytes 0..5+n, little endian
//! ```
//!
//! The CRC covers the length, so a torn or corrupt tail is detected rather than misread.

use core::fmt;

use crc::{CRC_32_ISCSI, Crc};
use serde::{Deserialize, Serialize};

use crate::config::Class;
use crate::time::Instant;

/// The format version written by this engine.
pub const VERSION: u8 = 1;
/// Bytes of a frame besides the body: version, length and CRC.
pub const HEADER_AND_CRC: usize = 9;
/// Largest encoded [`RecordMeta`].
pub const MAX_META: usize = 5 + 10 + 1 + 10;
/// Largest body a frame may declare (16 MiB): anything larger is corruption.
pub const MAX_BODY: usize = 16 << 20;

const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// What the engine keeps with each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The producer start count when the record was accepted.
    pub epoch: u32,
    /// The record's number within the epoch.
    pub seq: u64,
    /// Its class.
    pub class: Class,
    /// When it was accepted.
    pub enqueued_at: Instant,
}

/// A decoded frame, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's metadata.
    pub meta: RecordMeta,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the frame needs; `needed` is the full frame length if known.
    Truncated {
        /// Bytes the frame needs in total (at least 5 when the header itself is short).
        needed: usize,
    },
    /// An unknown format version.
    Version(u8),
    /// The declared body is longer than [`MAX_BODY`].
    TooLong,
    /// The CRC does not match.
    Crc,
    /// The body's metadata does not decode.
    Meta,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated { needed } => write!(f, "frame truncated: {needed} bytes needed"),
            FrameError::Version(v) => write!(f, "unknown frame version {v}"),
            FrameError::TooLong => write!(f, "frame body longer than {MAX_BODY} bytes"),
            FrameError::Crc => f.write_str("frame CRC mismatch"),
            FrameError::Meta => f.write_str("frame metadata does not decode"),
            FrameError::BufferTooSmall => f.write_str("buffer too small for the frame"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Encodes `meta` into `scratch`, returning the encoded bytes.
fn meta_bytes<'s>(meta: &RecordMeta, scratch: &'s mut [u8; MAX_META]) -> &'s [u8] {
    // MAX_META bounds every field's varint, so this cannot fail.
    postcard::to_slice(meta, scratch)
        .map(|s| &*s)
        .unwrap_or(&[])
}

/// The encoded length of a frame holding `payload_len` bytes.
pub fn encoded_len(meta: &RecordMeta, payload_len: usize) -> usize {
    let mut scratch = [0u8; MAX_META];
    HEADER_AND_CRC + meta_bytes(meta, &mut scratch).len() + payload_len
}

/// Writes one frame into the front of `out`, returning its length.
pub fn encode(meta: &RecordMeta, payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    let mut scratch = [0u8; MAX_META];
    let m = meta_bytes(meta, &mut scratch);
    let body = m.len() + payload.len();
    if body > MAX_BODY {
        return Err(FrameError::TooLong);
    }
    let total = HEADER_AND_CRC + body;
    let out = out.get_mut(..total).ok_or(FrameError::BufferTooSmall)?;
    out[0] = VERSION;
    out[1..5].copy_from_slice(&(body as u32).to_le_bytes());
    out[5..5 + m.len()].copy_from_slice(m);
    out[5 + m.len()..5 + body].copy_from_slice(payload);
    let crc = CASTAGNOLI.checksum(&out[..5 + body]);
    out[5 + body..].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

/// The total length of the frame starting at `bytes`, from its header alone.
pub fn peek_len(bytes: &[u8]) -> Result<usize, FrameError> {
    let head = bytes.get(..5).ok_or(FrameError::Truncated { needed: 5 })?;
    if head[0] != VERSION {
        return Err(FrameError::Version(head[0]));
    }
    let body = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if body > MAX_BODY {
        return Err(FrameError::TooLong);
    }
    Ok(HEADER_AND_CRC + body)
}

/// Decodes and checks the frame at the front of `bytes`; returns it and its length.
pub fn decode(bytes: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    let total = peek_len(bytes)?;
    let frame = bytes
        .get(..total)
        .ok_or(FrameError::Truncated { needed: total })?;
    let body_end = total - 4;
    let want = u32::from_le_bytes([
        frame[body_end],
        frame[body_end + 1],
        frame[body_end + 2],
        frame[body_end + 3],
    ]);
    if CASTAGNOLI.checksum(&frame[..body_end]) != want {
        return Err(FrameError::Crc);
    }
    Ok((decode_body(&frame[5..body_end])?, total))
}

/// Decodes the frame at the front of `bytes` without checking its CRC: for frames that
/// never left memory since they were encoded.
pub fn decode_trusted(bytes: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    let total = peek_len(bytes)?;
    let frame = bytes
        .get(..total)
        .ok_or(FrameError::Truncated { needed: total })?;
    Ok((decode_body(&frame[5..total - 4])?, total))
}

fn decode_body(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (meta, payload) =
        postcard::take_from_bytes::<RecordMeta>(body).map_err(|_| FrameError::Meta)?;
    Ok(Frame { meta, payload })
}

/// Iterates over the frames written back to back in a buffer (a transmit).
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    /// Frames in `bytes`, which must hold whole frames only.
    pub fn new(bytes: &'a [u8]) -> Self {
        Frames { rest: bytes }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match decode(self.rest) {
            Ok((f, n)) => {
                self.rest = &self.rest[n..];
                Some(Ok(f))
            }
            Err(e) => {
                // Stop after the first bad frame: its length cannot be trusted.
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RecordMeta {
        RecordMeta {
            epoch: 7,
            seq: 300,
            class: Class::Critical,
            enqueued_at: Instant::from_millis(1_700_000_000_000),
        }
    }

    #[test]
    fn golden_bytes() {
        let mut out = [0u8; 64];
        let n = encode(&meta(), b"hi", &mut out).unwrap();
        // version, len=12, postcard(epoch=7, seq=300 as varint ac 02, class=0,
        // enqueued_at=1700000000000 as a 6-byte varint), "hi", CRC-32C.
        let expected: &[u8] = &[
            0x01, 0x0c, 0x00, 0x00, 0x00, // header
            0x07, 0xac, 0x02, 0x00, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, // meta
            b'h', b'i', // payload
        ];
        assert_eq!(&out[..n - 4], expected);
        let crc = CASTAGNOLI.checksum(expected).to_le_bytes();
        assert_eq!(&out[n - 4..n], &crc);
        assert_eq!(n, encoded_len(&meta(), 2));
        // Computed independently with a bitwise CRC-32C (reflected poly 0x82F63B78).
        assert_eq!(crc, [0x06, 0x2e, 0x56, 0xbe]);
    }

    #[test]
    fn round_trip_and_corruption() {
        let mut out = [0u8; 64];
        let n = encode(&meta(), b"payload", &mut out).unwrap();
        let (f, used) = decode(&out[..n]).unwrap();
        assert_eq!((f.meta, f.payload, used), (meta(), &b"payload"[..], n));
        for cut in 0..n {
            assert!(
                matches!(decode(&out[..cut]), Err(FrameError::Truncated { .. })),
                "cut {cut}"
            );
        }
        for i in 5..n {
            let mut bad = out;
            bad[i] ^= 0x40;
            assert_eq!(
                decode(&bad[..n]).unwrap_err(),
                FrameError::Crc,
                "flip at {i}"
            );
        }
        let mut v = out;
        v[0] = 9;
        assert_eq!(decode(&v[..n]).unwrap_err(), FrameError::Version(9));
        let mut long = out;
        long[4] = 0xff;
        assert_eq!(decode(&long[..n]).unwrap_err(), FrameError::TooLong);
        assert_eq!(
            encode(&meta(), b"payload", &mut out[..5]),
            Err(FrameError::BufferTooSmall)
        );
    }

    #[test]
    fn frames_iterates_back_to_back() {
        let mut buf = [0u8; 128];
        let a = encode(&meta(), b"a", &mut buf).unwrap();
        let b = encode(&RecordMeta { seq: 301, ..meta() }, b"bb", &mut buf[a..]).unwrap();
        let got: heapless::Vec<_, 4> = Frames::new(&buf[..a + b])
            .map(|f| f.unwrap().meta.seq)
            .collect();
        assert_eq!(got.as_slice(), &[300, 301]);
    }
}
