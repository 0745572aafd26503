//! The serial wire between a device and its gateway: postcard messages, each followed by
//! its CRC-32C and framed with COBS, so a zero byte always ends a message and a receiver
//! that joins mid-stream (or loses bytes) resynchronises at the next zero.
//!
//! ```text
//! COBS( postcard(message) ‖ CRC-32C(postcard(message)) as u32 LE ) ‖ 0x00
//! ```
//!
//! The device says [`Uplink::Hello`] with its id, then sends [`Uplink::Record`] for every
//! record of a transmit; the gateway answers
//! [`Downlink::Ack`] once the record is in its own durable outbox (or [`Downlink::Reject`]
//! when it can never accept it). Only an ack frees a record on the device.
//!
//! ```
//! use twinhub_core::wire::{self, Downlink, Uplink};
//! use twinhub_core::Class;
//!
//! let rec = Uplink::Record { epoch: 1, seq: 42, class: Class::Critical, payload: b"21.5C" };
//! let mut out = [0u8; 128];
//! let n = wire::encode(&rec, &mut out).unwrap();
//! assert_eq!(out[n - 1], 0, "a zero ends every message");
//! assert!(!out[..n - 1].contains(&0));
//!
//! // The receiver collects bytes until a zero, then decodes in place.
//! let mut acc = wire::Accumulator::<128>::new();
//! let mut got = None;
//! for &b in &out[..n] {
//!     if let Some(frame) = acc.push(b) {
//!         // The message borrows the accumulator's buffer until the next push.
//!         if let Uplink::Record { seq, payload, .. } = wire::decode(frame.unwrap()).unwrap() {
//!             assert_eq!(payload, b"21.5C");
//!             got = Some(seq);
//!         }
//!     }
//! }
//! assert_eq!(got, Some(42));
//! # let _ = Downlink::Ack { epoch: 1, seq: 42 };
//! ```

use serde::{Deserialize, Serialize};

use crate::config::Class;
use crate::frame::crc32c;

/// A message from a device to its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Uplink<'a> {
    /// Who is on this line: sent once when the line comes up and whenever the gateway
    /// asks ([`Downlink::Identify`]), so records need not repeat the device id.
    Hello {
        /// The device's id.
        device: &'a str,
    },
    /// One record, under the id the device gave it (`device:epoch:seq`).
    Record {
        /// The device's start count when it accepted the record.
        epoch: u32,
        /// The record's number within the epoch.
        seq: u64,
        /// Its class.
        class: Class,
        /// The payload bytes.
        payload: &'a [u8],
    },
}

impl Uplink<'_> {
    /// Payloads up to this size cost no more bytes on the line, as a [`Uplink::Record`],
    /// than their engine frame ([`crate::frame::encoded_len`]), which is what the engine
    /// charges against a link's budget: a budget then bounds the line's bytes too.
    pub const BUDGET_EXACT_PAYLOAD: usize = 232;
}

/// A message from the gateway to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Downlink {
    /// The record is in the gateway's durable outbox: the device may forget it.
    Ack {
        /// The record's epoch.
        epoch: u32,
        /// The record's number within the epoch.
        seq: u64,
    },
    /// The gateway can never accept the record (too large, malformed): the device should
    /// drop it rather than resend it forever.
    Reject {
        /// The record's epoch.
        epoch: u32,
        /// The record's number within the epoch.
        seq: u64,
    },
    /// The gateway does not know who is on this line: the device should say
    /// [`Uplink::Hello`] again.
    Identify,
}

/// Why bytes are not a wire message, or a message does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// The output buffer is too small (it needs about twice the message's size).
    BufferTooSmall,
    /// A message ran past the receiver's buffer before its zero; it was discarded.
    TooLong,
    /// The COBS framing is broken.
    Cobs,
    /// Shorter than a checksum.
    Truncated,
    /// The checksum does not match: bytes were corrupted on the line.
    Crc,
    /// The checksum matches but the bytes are not a known message.
    Decode,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WireError::BufferTooSmall => "wire message does not fit the output buffer",
            WireError::TooLong => "wire message longer than the receive buffer",
            WireError::Cobs => "wire message has broken COBS framing",
            WireError::Truncated => "wire message shorter than its checksum",
            WireError::Crc => "wire message checksum mismatch",
            WireError::Decode => "wire message is not a known message",
        })
    }
}

impl core::error::Error for WireError {}

/// Encodes `msg` into `out` with its checksum, COBS framing and the closing zero; returns
/// the bytes written. `out` needs room for about twice the message (it is also the
/// scratch space).
pub fn encode<T: Serialize>(msg: &T, out: &mut [u8]) -> Result<usize, WireError> {
    let len = postcard::to_slice(msg, out)
        .map_err(|_| WireError::BufferTooSmall)?
        .len();
    let crc = crc32c(&out[..len]);
    let raw = len + 4;
    out.get_mut(len..raw)
        .ok_or(WireError::BufferTooSmall)?
        .copy_from_slice(&crc.to_le_bytes());
    // Move the raw bytes to the end, then COBS-encode them to the front: the encoding never
    // overtakes its source when there is room for the whole of it in front.
    let framed = cobs::max_encoding_length(raw) + 1;
    let start = out
        .len()
        .checked_sub(raw)
        .filter(|s| *s >= framed)
        .ok_or(WireError::BufferTooSmall)?;
    out.copy_within(..raw, start);
    let (dst, src) = out.split_at_mut(start);
    let n = cobs::try_encode(src, dst).map_err(|_| WireError::BufferTooSmall)?;
    dst[n] = 0;
    Ok(n + 1)
}

/// Decodes one message from `frame`: the bytes before a zero, COBS-decoded in place.
pub fn decode<'a, T: Deserialize<'a>>(frame: &'a mut [u8]) -> Result<T, WireError> {
    let n = cobs::decode_in_place(frame).map_err(|_| WireError::Cobs)?;
    let raw = &frame[..n];
    let body = n.checked_sub(4).ok_or(WireError::Truncated)?;
    let want = u32::from_le_bytes([raw[body], raw[body + 1], raw[body + 2], raw[body + 3]]);
    if crc32c(&raw[..body]) != want {
        return Err(WireError::Crc);
    }
    let (msg, rest) = postcard::take_from_bytes(&frame[..body]).map_err(|_| WireError::Decode)?;
    if !rest.is_empty() {
        return Err(WireError::Decode);
    }
    Ok(msg)
}

/// Collects received bytes into messages in a fixed buffer of `N` bytes.
#[derive(Debug)]
pub struct Accumulator<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for Accumulator<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Accumulator<N> {
    /// An empty accumulator.
    pub const fn new() -> Self {
        Accumulator {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Takes one received byte. At a zero it hands out the message's framed bytes (for
    /// [`decode`]), or [`WireError::TooLong`] when the message did not fit and was dropped.
    /// Empty messages (two zeros in a row) are skipped.
    pub fn push(&mut self, byte: u8) -> Option<Result<&mut [u8], WireError>> {
        if byte != 0 {
            match self.buf.get_mut(self.len) {
                Some(slot) if !self.overflow => {
                    *slot = byte;
                    self.len += 1;
                }
                _ => self.overflow = true,
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overflow) {
            return Some(Err(WireError::TooLong));
        }
        if len == 0 {
            return None;
        }
        Some(Ok(&mut self.buf[..len]))
    }
}
