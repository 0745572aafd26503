//! The record store contract the engine is moving to: records addressed by key, and the
//! [`Persist`] trait for what a device keeps across restarts besides its records.
//!
//! This module carries the new contract's types and traits so that stores written against it
//! (the flash outbox) can be built and tested now; it is to be replaced by the engine's own
//! `store` module, which defines the same names.

use core::fmt;

use crate::frame::{FrameError, RecordMeta};
use crate::producer::LinkSpend;

/// Names one record in a store: the epoch it was accepted in and its number within it.
/// Ordered as records were accepted (epoch first, then seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    /// The producer start count when the record was accepted.
    pub epoch: u32,
    /// The record's number within the epoch.
    pub seq: u64,
}

/// The key of the record `meta` describes (`RecordMeta::key` in the engine's own module).
#[inline]
pub fn key_of(meta: &RecordMeta) -> RecordKey {
    RecordKey {
        epoch: meta.epoch,
        seq: meta.seq,
    }
}

/// What a store knows about one record without reading its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// The record's metadata.
    pub meta: RecordMeta,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Encoded frame length in bytes (frame::encoded_len(meta, payload_len)).
    pub frame_len: u32,
}

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// No room for the record; nothing was written.
    Full,
    /// No record with that key.
    NoSuchRecord,
    /// A frame read back does not decode (or the out buffer is too small: Corrupt(FrameError::BufferTooSmall)).
    Corrupt(FrameError),
    /// A record appended with a key not above every key held; nothing was written.
    OutOfOrder,
    /// The medium failed.
    Io,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full => f.write_str("store full"),
            StoreError::NoSuchRecord => f.write_str("no record with that key"),
            StoreError::Corrupt(e) => write!(f, "stored record unreadable: {e}"),
            StoreError::OutOfOrder => f.write_str("record key not above every key held"),
            StoreError::Io => f.write_str("storage medium failed"),
        }
    }
}

impl core::error::Error for StoreError {}

/// Where pending records live, addressed by key. Records are appended in key order; the
/// store keeps no engine bookkeeping (in flight, delivered): the engine keeps that itself.
pub trait Store {
    /// Records held.
    fn len(&self) -> usize;
    /// Whether no record is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Total capacity in bytes, as counted by `cost`.
    fn capacity(&self) -> usize;
    /// Bytes a frame of `frame_len` bytes takes in this store.
    fn cost(&self, frame_len: usize) -> usize;
    /// Whether a frame of `frame_len` bytes can be appended now.
    fn fits(&self, frame_len: usize) -> bool;
    /// Appends a record; all or nothing (never a half-written record, even on power loss for
    /// durable stores). Its key must be above every key held, else OutOfOrder.
    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError>;
    /// The oldest record whose key is greater than `after` (the oldest of all with `None`).
    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError>;
    /// Copies the frame of record `key` into `out`; returns its length.
    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError>;
    /// Removes record `key` (any record, not only the oldest).
    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError>;
}

/// What a device keeps across restarts besides its records. A store that survives restarts
/// usually implements it too; the engine never calls it, the driver does at start and after
/// charging a budgeted link.
pub trait Persist {
    /// Takes this start's epoch: larger than every epoch taken before on this device, and
    /// durable before it returns (a reused epoch repeats message ids, which a deduping
    /// consumer discards: silent loss).
    fn next_epoch(&mut self) -> Result<u32, StoreError>;
    /// The spend of link index `link` saved last, if any.
    fn load_spend(&mut self, link: u8) -> Result<Option<LinkSpend>, StoreError>;
    /// Saves the spend of link index `link`; durable before it returns.
    fn save_spend(&mut self, link: u8, spend: LinkSpend) -> Result<(), StoreError>;
}
