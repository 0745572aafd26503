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
//!
//! The metadata is postcard's encoding of [`RecordMeta`] (four LEB128 varints). It is
//! written and read here directly because the engine reads it several times per record on
//! its hot path; tests check every byte against postcard itself.

use core::fmt;

#[cfg(any(not(feature = "hw-crc"), test))]
use crc::{CRC_32_ISCSI, Crc, Table};
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

// Slice-by-16 by default; `compact-crc` trades speed for a 1 KiB table on small flash.
#[cfg(all(not(feature = "compact-crc"), any(not(feature = "hw-crc"), test)))]
const CASTAGNOLI: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);
#[cfg(all(feature = "compact-crc", any(not(feature = "hw-crc"), test)))]
const CASTAGNOLI: Crc<u32, Table<1>> = Crc::<u32, Table<1>>::new(&CRC_32_ISCSI);

/// CRC-32C (Castagnoli) of `bytes`, the checksum of frames and wire messages.
#[cfg(not(feature = "hw-crc"))]
#[inline]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    CASTAGNOLI.checksum(bytes)
}

/// CRC-32C (Castagnoli) of `bytes`, the checksum of frames and wire messages: with the
/// CPU's CRC instructions where it has them (the same values as the table).
#[cfg(feature = "hw-crc")]
#[inline]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    ::crc32c::crc32c(bytes)
}

/// What the engine keeps with each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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

impl RecordMeta {
    /// The key a store files this record under.
    #[inline]
    pub fn key(&self) -> crate::store::RecordKey {
        crate::store::RecordKey {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// A decoded frame, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Frame<'a> {
    /// The record's metadata.
    pub meta: RecordMeta,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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

/// Bytes of a varint, by its value's leading zero bits: a load, where the division by
/// seven took a multiply and shifts (three varints are sized per record, twice).
const VARINT_LEN: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut lz = 0;
    while lz < 64 {
        t[lz] = (64 - lz).div_ceil(7) as u8;
        lz += 1;
    }
    t
};

#[inline]
fn varint_len(v: u64) -> usize {
    // `v | 1` has at most 63 leading zeros.
    VARINT_LEN[(v | 1).leading_zeros() as usize] as usize
}

#[inline]
fn put_varint(mut v: u64, out: &mut [u8]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

/// Reads a varint of at most `max` bytes whose value fits in `bits`, as postcard does.
#[inline]
fn get_varint(bytes: &[u8], max: usize, bits: u32) -> Option<(u64, usize)> {
    // One byte is the common case (epochs, classes, small sequence numbers).
    if let Some(&b) = bytes.first()
        && b < 0x80
    {
        return Some((u64::from(b), 1));
    }
    // Two bytes, without the eight-byte gathering: sequence numbers below 16,384 (the
    // first of every epoch) and short times. A second byte of zero is overlong: left to
    // the paths below, which refuse it.
    if let Some(&[b0, b1]) = bytes.first_chunk::<2>()
        && b1 < 0x80
        && b1 != 0
    {
        let v = u64::from(b0 & 0x7f) | (u64::from(b1) << 7);
        return (max >= 2 && (bits == 64 || v >> bits == 0)).then_some((v, 2));
    }
    // Up to eight bytes at once when eight are there to load: the hot path for sequence
    // numbers and timestamps, which take two to six bytes.
    if let Some(word) = bytes.first_chunk::<8>() {
        // From an array, not eight indexed bytes: one load rather than eight and shifts.
        let w = u64::from_le_bytes(*word);
        let ends = !w & 0x8080_8080_8080_8080;
        if ends != 0 {
            let n = (ends.trailing_zeros() / 8 + 1) as usize;
            if n <= max {
                // A last byte of zero pads the value (an overlong encoding): the encoder
                // never writes one, so a frame that has it was not written by us.
                if (w >> (8 * (n - 1))) & 0xff == 0 {
                    return None;
                }
                let v = gather7(w & (u64::MAX >> (64 - 8 * n as u32)));
                return (bits == 64 || v >> bits == 0).then_some((v, n));
            }
        }
    }
    let mut v = 0u64;
    for (i, &b) in bytes.iter().take(max).enumerate() {
        let bits7 = u64::from(b & 0x7f);
        // The tenth byte of a u64 carries one bit; more would shift out unseen.
        if (bits7 << (7 * i)) >> (7 * i) != bits7 {
            return None;
        }
        v |= bits7 << (7 * i);
        if b & 0x80 == 0 {
            // Overlong, as above.
            if b == 0 && i > 0 {
                return None;
            }
            return (bits == 64 || v >> bits == 0).then_some((v, i + 1));
        }
    }
    None
}

/// The low seven bits of each byte of `w`, packed together (byte 0 lowest): the value of
/// a varint of at most eight bytes loaded little endian.
#[inline]
fn gather7(w: u64) -> u64 {
    let x = w & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

/// Bytes of the encoded metadata.
#[inline]
pub(crate) fn meta_len(meta: &RecordMeta) -> usize {
    varint_len(u64::from(meta.epoch))
        + varint_len(meta.seq)
        + 1
        + varint_len(meta.enqueued_at.as_millis())
}

/// Writes the metadata at the front of `m` (a fixed array: no bounds checks per byte) and
/// returns its length; the bytes after it are left as they were.
#[inline]
fn put_meta(meta: &RecordMeta, m: &mut [u8; MAX_META]) -> usize {
    let mut n = put_varint(u64::from(meta.epoch), &mut m[..5]);
    n += put_varint(meta.seq, &mut m[n..n + 10]);
    m[n] = meta.class as u8;
    n += 1;
    n += put_varint(meta.enqueued_at.as_millis(), &mut m[n..n + 10]);
    n
}

/// The metadata at the front of a frame's `body` and its length; a store that holds only
/// frames it encoded itself (so their header and CRC are as written) reads it directly.
#[inline(always)]
pub(crate) fn get_meta(body: &[u8]) -> Option<(RecordMeta, usize)> {
    let (epoch, a) = get_varint(body, 5, 32)?;
    let (seq, b) = get_varint(&body[a..], 10, 64)?;
    let (class, c) = get_varint(&body[a + b..], 5, 32)?;
    let class = *Class::ALL.get(class as usize)?;
    let (at, d) = get_varint(&body[a + b + c..], 10, 64)?;
    let meta = RecordMeta {
        epoch: epoch as u32,
        seq,
        class,
        enqueued_at: Instant::from_millis(at),
    };
    Some((meta, a + b + c + d))
}

/// The encoded length of a frame holding `payload_len` bytes.
#[inline]
pub fn encoded_len(meta: &RecordMeta, payload_len: usize) -> usize {
    HEADER_AND_CRC + meta_len(meta) + payload_len
}

/// Writes one frame into the front of `out`, returning its length.
#[inline]
pub fn encode(meta: &RecordMeta, payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    encode_sized(meta, meta_len(meta), payload, out)
}

/// [`encode`] given the metadata's length, `m` (what [`encoded_len`] less the header, CRC
/// and payload), for a caller that has it already.
#[inline(always)]
pub(crate) fn encode_sized(
    meta: &RecordMeta,
    m: usize,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, FrameError> {
    let body = m + payload.len();
    if body > MAX_BODY {
        return Err(FrameError::TooLong);
    }
    let total = HEADER_AND_CRC + body;
    let out = out.get_mut(..total).ok_or(FrameError::BufferTooSmall)?;
    out[0] = VERSION;
    out[1..5].copy_from_slice(&(body as u32).to_le_bytes());
    // With room for the largest metadata, written in place (the payload and CRC written
    // next cover whatever lands past its end), saving a copy a record; else copied over.
    let mut tmp = [0u8; MAX_META];
    let in_place = out.len() >= 5 + MAX_META;
    let dst = match out[5..].first_chunk_mut::<MAX_META>() {
        Some(dst) => dst,
        None => &mut tmp,
    };
    put_meta(meta, dst);
    if !in_place {
        out[5..5 + m].copy_from_slice(&tmp[..m]);
    }
    out[5 + m..5 + body].copy_from_slice(payload);
    let crc = crc32c(&out[..5 + body]);
    out[5 + body..].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

/// The total length of the frame starting at `bytes`, from its header alone.
#[inline]
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

/// The metadata of the frame starting at `bytes`, from its first bytes alone (no CRC
/// check): for a store that reads only the front of a frame to learn its key.
/// Also returns the body length the header declares and the metadata's length.
#[cfg(feature = "flash")]
pub(crate) fn peek_meta(bytes: &[u8]) -> Option<(RecordMeta, usize, usize)> {
    let body = peek_len(bytes).ok()? - HEADER_AND_CRC;
    get_meta(bytes.get(5..)?).map(|(meta, n)| (meta, body, n))
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
    if crc32c(&frame[..body_end]) != want {
        return Err(FrameError::Crc);
    }
    Ok((decode_body(&frame[5..body_end])?, total))
}

/// Decodes the frame at the front of `bytes` without checking its CRC: for frames that
/// never left memory since they were encoded.
#[inline(always)]
pub fn decode_trusted(bytes: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    let total = peek_len(bytes)?;
    let frame = bytes
        .get(..total)
        .ok_or(FrameError::Truncated { needed: total })?;
    Ok((decode_body(&frame[5..total - 4])?, total))
}

// Always inlined (as is `get_meta`), for `RamStore`'s walk; left to the compiler, one of
// the three was kept out of line and returned its parts through memory.
#[inline(always)]
fn decode_body(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (meta, n) = get_meta(body).ok_or(FrameError::Meta)?;
    Ok(Frame {
        meta,
        payload: &body[n..],
    })
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
    /// Found by fuzzing: a sequence number padded with a zero byte (`a8 ff ff ff bf 00`)
    /// decoded to the value of its five-byte form, so a frame we never wrote was accepted
    /// and re-encoded differently. Overlong varints are refused, on both read paths.
    #[test]
    fn overlong_varints_are_refused() {
        assert_eq!(
            get_varint(&[0xa8, 0xff, 0xff, 0xff, 0xbf, 0x00, 0, 0], 10, 64),
            None
        );
        assert_eq!(get_varint(&[0x80, 0x00], 10, 64), None);
        assert_eq!(get_varint(&[0x80, 0x00, 0, 0, 0, 0, 0, 0], 10, 64), None);
        assert_eq!(get_varint(&[0xff, 0x7f], 10, 64), Some((16_383, 2)));
        assert_eq!(get_varint(&[0x00], 10, 64), Some((0, 1)));
        assert_eq!(
            get_varint(&[0x80, 0x01, 0, 0, 0, 0, 0, 0], 10, 64),
            Some((128, 2))
        );
        let crash = [
            1, 20, 0, 0, 0, 0, 168, 255, 255, 255, 191, 0, 1, 0, 28, 255, 255, 186, 220, 0, 0, 191,
            255, 0, 255, 122, 88, 233, 8, 0, 0, 0, 0,
        ];
        assert_eq!(decode(&crash).err(), Some(FrameError::Meta));
    }

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

    /// Whichever CRC is built in (table or CPU instructions) agrees with the table on
    /// every length and alignment.
    #[test]
    fn crc_matches_the_table() {
        let data: [u8; 300] = core::array::from_fn(|i| (i as u8).wrapping_mul(167) ^ 0x5c);
        for start in 0..9 {
            for end in start..data.len() {
                let bytes = &data[start..end];
                assert_eq!(crc32c(bytes), CASTAGNOLI.checksum(bytes), "{start}..{end}");
            }
        }
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
    fn meta_bytes_are_postcards() {
        let mut rng = fastrand::Rng::with_seed(3);
        for i in 0..20_000u64 {
            let shift = |r: &mut fastrand::Rng| r.u64(..) >> r.u32(0..64);
            let meta = RecordMeta {
                epoch: (shift(&mut rng) as u32) | if i == 0 { u32::MAX } else { 0 },
                seq: shift(&mut rng),
                class: Class::ALL[rng.usize(0..3)],
                enqueued_at: Instant::from_millis(shift(&mut rng)),
            };
            let mut ours = [0u8; MAX_META];
            let n = put_meta(&meta, &mut ours);
            let mut theirs = [0u8; MAX_META];
            let expected = postcard::to_slice(&meta, &mut theirs).unwrap();
            assert_eq!(&ours[..n], &*expected);
            assert_eq!(n, meta_len(&meta));
            assert_eq!(get_meta(&ours[..n]), Some((meta, n)));
            // Followed by a payload, as in a frame: the eight-byte path reads past the end
            // of a varint and must ignore what it finds there, high bits set or not.
            for fill in [0x00, 0xaa, 0xff] {
                let mut framed = [fill; MAX_META + 8];
                framed[..n].copy_from_slice(&ours[..n]);
                assert_eq!(get_meta(&framed), Some((meta, n)), "{fill:#x}");
            }
            let (back, rest) = postcard::take_from_bytes::<RecordMeta>(&ours[..n]).unwrap();
            assert_eq!((back, rest.len()), (meta, 0));
        }
        // What postcard refuses, we refuse: overlong varints, out-of-range values, bad class.
        for bad in [
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0, 0][..],
            &[0xff, 0xff, 0xff, 0xff, 0x1f, 0, 0, 0],
            &[1, 1, 3, 0],
            &[0xff, 0xff, 0xff, 0xff, 0x1f, 0, 0, 0, 0, 0],
            &[
                1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0, 0,
            ],
            &[
                1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ],
        ] {
            assert_eq!(
                get_meta(bad).is_some(),
                postcard::from_bytes::<RecordMeta>(bad).is_ok(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn varint_len_is_what_put_varint_writes() {
        let mut buf = [0u8; 10];
        for bits in 0..64 {
            for v in [1u64 << bits, (1u64 << bits) - 1, u64::MAX >> (63 - bits)] {
                assert_eq!(varint_len(v), put_varint(v, &mut buf), "{v:#x}");
            }
        }
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
